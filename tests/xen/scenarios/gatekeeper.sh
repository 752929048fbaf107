# gatekeeper: an external client cannot reach an internal TCP service
# until pihctl inserts a rule over the management vif; then it connects to
# the returned ip:port and exchanges data; another external host cannot use
# that port; after remove, the established session goes silent (no RST)
# and new connections fail. The same for a UDP rule.
# timeout: 300
. /tests/netlib.sh
NAT_ROLES="ext2 mgmt" nat_up
SVC=192.168.252.10:7000
BR=10.0.1.3:8080
flowgen_bg svc int tcp-server --listen "$SVC"
wait_ping mgmt 10.0.1.3 20 || fail "the management address does not answer"

out=$(host_exec ext "$FLOWGEN" tcp-clients --connect 10.0.0.2:7000 --count 1 --timeout-ms 3000 --expect-ok 0)
note "before any rule: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 0 ] || fail "the service was reachable without a rule"

ans=$(host_exec mgmt pihctl --bridge "$BR" --json insert 10.0.0.1 "$SVC") || fail "pihctl insert failed: $ans"
note "insert: $ans"
port=$(printf '%s\n' "$ans" | sed -n 's/.*"port":\([0-9]*\).*/\1/p')
ip=$(printf '%s\n' "$ans" | sed -n 's/.*"ip":"\([0-9.]*\)".*/\1/p')
[ "$ip" = 10.0.0.2 ] && [ -n "$port" ] || fail "insert answered '$ans'"
again=$(host_exec mgmt pihctl --bridge "$BR" --json insert 10.0.0.1 "$SVC")
[ "$(printf '%s\n' "$again" | sed -n 's/.*"port":\([0-9]*\).*/\1/p')" = "$port" ] || fail "inserting the same rule again gave '$again', want port $port"

out=$(host_exec ext "$FLOWGEN" tcp-clients --connect "10.0.0.2:$port" --count 3 --timeout-ms 10000)
note "allowed client: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 3 ] || fail "the allowed client could not use 10.0.0.2:$port: $(summary "$out")"
out=$(host_exec ext2 "$FLOWGEN" tcp-clients --connect "10.0.0.2:$port" --count 1 --timeout-ms 3000 --expect-ok 0)
note "other host: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 0 ] || fail "another external host used the rule's port"
[ "$(field refused "$(summary "$out")")" = 0 ] || fail "the other host got an RST instead of silence"

# An established session, then the rule goes away.
ready=/tmp/gk.ready gate=/tmp/gk.gate
rm -f "$ready" "$gate"
bg_start held ext "$FLOWGEN" tcp-clients --connect "10.0.0.2:$port" --count 1 --together \
  --rounds 2 --ready "$ready" --gate "$gate" --gate-timeout-ms 60000 --timeout-ms 6000
for _ in $(seq 150); do [ -f "$ready" ] && break; sleep 0.2; done
[ -f "$ready" ] || fail "the held session did not complete its first exchange"
note "held session first exchange: $(cat "$ready")"
rm_out=$(host_exec mgmt pihctl --bridge "$BR" --json remove 10.0.0.1 "$SVC") || fail "pihctl remove failed: $rm_out"
note "remove: $rm_out"
touch "$gate"
bg_wait held 30
line=$(summary "$(cat "$(bg_out held)")")
note "held session after remove: $line"
[ "$(field ok "$line")" = 0 ] || fail "the established session still worked after remove: $line"
[ "$(field refused "$line")" = 0 ] || fail "the client got an RST after remove: $line"
out=$(host_exec ext "$FLOWGEN" tcp-clients --connect "10.0.0.2:$port" --count 1 --timeout-ms 3000 --expect-ok 0)
note "new connection after remove: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 0 ] || fail "new connections still work after remove"
[ "$(field refused "$(summary "$out")")" = 0 ] || fail "a new connection after remove got an RST"
list=$(host_exec mgmt pihctl --bridge "$BR" --json list)
note "rules now: $list"
printf '%s\n' "$list" | grep -q '"total":0' || fail "the rule is still listed after remove: $list"
stats=$(host_exec mgmt pihctl --bridge "$BR" --json stats) || fail "pihctl stats failed: $stats"
note "stats: $stats"
printf '%s\n' "$stats" | grep -q '"flows_removed":[1-9]' || fail "stats do not count the flows removed with the rule: $stats"
host_exec mgmt pihctl --bridge "$BR" stats >/dev/null || fail "pihctl stats (table output) failed"

# UDP: an echo service reachable only by the allowed client, until removed.
flowgen_bg echo int udp-echo --listen 192.168.252.10:5353
ans=$(host_exec mgmt pihctl --bridge "$BR" --json insert 10.0.0.1 192.168.252.10:5353 --proto udp) \
  || fail "pihctl insert (udp) failed: $ans"
note "insert udp: $ans"
uport=$(printf '%s\n' "$ans" | sed -n 's/.*"port":\([0-9]*\).*/\1/p')
[ -n "$uport" ] || fail "udp insert answered '$ans'"
out=$(host_exec ext "$FLOWGEN" udp-ping --to "10.0.0.2:$uport" --count 5 --timeout-ms 3000)
note "udp, allowed client: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 5 ] || fail "the allowed client's datagrams did not come back: $(summary "$out")"
out=$(host_exec ext2 "$FLOWGEN" udp-ping --to "10.0.0.2:$uport" --count 2 --timeout-ms 2000 --expect-ok 0)
note "udp, other host: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 0 ] || fail "another host used the udp rule's port"
host_exec mgmt pihctl --bridge "$BR" --json remove 10.0.0.1 192.168.252.10:5353 --proto udp >/dev/null \
  || fail "pihctl remove (udp) failed"
out=$(host_exec ext "$FLOWGEN" udp-ping --to "10.0.0.2:$uport" --count 2 --timeout-ms 2000 --expect-ok 0)
note "udp after remove: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 0 ] || fail "the udp rule still works after remove"
true
