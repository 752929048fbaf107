# shutdown: `xl shutdown` makes the guest power itself off cleanly.
pih_create
expect_log "$PIH_DOM" 'ready' 60
note "ready; xl shutdown"
xl shutdown "$PIH_DOM" || fail "xl shutdown failed"
# The guest's part: shut down (poweroff) within 10 s.
wait_domain_down "$PIH_DOM" 10 \
  || fail "guest did not shut down within 10 s of xl shutdown (state '$(domain_state "$PIH_DOM")')"
note "guest down"
wait_shutdown_reason "$PIH_DOM" 10 || fail "xl logged no shutdown reason"
reason=$(shutdown_reason "$PIH_DOM")
[ "$reason" = poweroff ] || fail "guest shut down with reason '$reason', expected poweroff"
# The toolstack's part (on_poweroff = "destroy"): slower under emulation.
wait_domain_gone "$PIH_DOM" 60 || fail "domain not destroyed 60 s after it powered off"
note "domain gone"
# xenconsoled may write the last lines just after the domain died.
wait_for_log "$PIH_DOM" 'shutdown: poweroff' 5 || fail "no console line matching 'shutdown: poweroff'"
