# bad-config: a malformed address on the command line: the guest says what
# is wrong and shuts itself down instead of running half-configured.
# (xl accepts KEY=VALUE overrides after the config file.)
pih_create 'cmdline="ext=10.0.0.300/24 gw=10.0.0.1 int=192.168.252.1/24 mgmt=10.0.1.3/24 auth=off"'
expect_log "$PIH_DOM" 'config: ext: ' 15
note "config error reported"
wait_domain_down "$PIH_DOM" 15 \
  || fail "guest still running 15 s after a bad config (state '$(domain_state "$PIH_DOM")')"
note "guest down"
log_has "$PIH_DOM" 'ready' && fail "guest said ready despite a bad config"
wait_shutdown_reason "$PIH_DOM" 10 || fail "xl logged no shutdown reason"
reason=$(shutdown_reason "$PIH_DOM")
[ "$reason" = crash ] && fail "guest crashed instead of shutting down"
note "shutdown reason: $reason"
wait_domain_gone "$PIH_DOM" 60 || fail "domain not destroyed 60 s after it shut down"
