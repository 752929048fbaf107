# shutdown: `xl shutdown` makes the guest power itself off cleanly.
pih_create
expect_log "$PIH_DOM" 'ready' 60
note "ready; xl shutdown"
xl shutdown "$PIH_DOM" || fail "xl shutdown failed"
wait_domain_gone "$PIH_DOM" 10 || fail "domain still there 10 s after xl shutdown (state '$(domain_state "$PIH_DOM")')"
note "domain gone"
# xenconsoled may flush the last lines just after the domain died.
wait_for_log "$PIH_DOM" 'shutdown: poweroff' 2 || fail "no console line matching 'shutdown: poweroff'"
