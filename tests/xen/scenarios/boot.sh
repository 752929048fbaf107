# boot: the shipped config starts; the guest prints its banner, its
# configuration and "ready", and xl sees it running.
t0=$(ts)
pih_create
t_created=$(ts)
expect_log "$PIH_DOM" 'pih-bridge [0-9]+\.[0-9]+\.[0-9]+ .*domid=[0-9]+' 60
t_banner=$(ts)
note "banner seen"
expect_log "$PIH_DOM" 'config: ext=10\.0\.0\.2/24' 60
expect_log "$PIH_DOM" 'ready' 60
t_ready=$(ts)
note "ready seen"
echo "METRIC xl_create_returned_s $(awk -v a="$t0" -v b="$t_created" 'BEGIN { printf "%.2f", b - a }')"
echo "METRIC create_to_banner_s $(awk -v a="$t0" -v b="$t_banner" 'BEGIN { printf "%.2f", b - a }')"
echo "METRIC create_to_ready_s $(awk -v a="$t0" -v b="$t_ready" 'BEGIN { printf "%.2f", b - a }')"
guest_ms=$(tr -d '\r' < "$(console_log "$PIH_DOM")" | sed -n 's/.*ready (boot took \([0-9]*\) ms.*/\1/p' | head -n1)
echo "METRIC guest_boot_ms ${guest_ms:-?}"
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
