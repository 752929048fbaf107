# boot: the shipped config starts; the guest prints its banner, its
# configuration and "ready", and xl sees it running.
pih_create
expect_log "$PIH_DOM" 'pih-bridge [0-9]+\.[0-9]+\.[0-9]+ .*domid=[0-9]+' 60
note "banner seen"
expect_log "$PIH_DOM" 'config: ext=10\.0\.0\.2/24' 60
expect_log "$PIH_DOM" 'ready' 60
note "ready seen"
state=$(domain_state "$PIH_DOM")
note "xl list state: $state"
xl list "$PIH_DOM"
case "$state" in
  *c*|*d*|*s*|*p*|"") fail "domain not running after ready (xl list state '$state')" ;;
  *r*|*b*) ;;
  *) fail "domain neither running nor blocked (xl list state '$state')" ;;
esac
xl destroy "$PIH_DOM" || fail "xl destroy failed"
wait_domain_gone "$PIH_DOM" 10 || fail "domain still there 10 s after xl destroy"
