# ttl-exceeded: a packet from inside whose TTL runs out at the bridge gets
# ICMP time exceeded back from the bridge's internal address (RFC 1812);
# with one more hop it reaches the outside host.
# timeout: 180
. /tests/netlib.sh
net_hosts_up
pih_create
expect_log "$PIH_DOM" 'ready' 60
for role in ext int; do wait_vif_connected "$role" 60; done
ok=0
for _ in 1 2 3; do ping_ok int 10.0.0.1 && { ok=1; break; }; done
[ "$ok" = 1 ] || fail "the outside host is not reachable through the bridge"
out=$(host_exec int /usr/bin/ping -c 3 -t 1 -W 2 10.0.0.1 2>&1)
note "$out"
printf '%s\n' "$out" | grep -Eq 'From 192\.168\.252\.1 .*(Time to live exceeded|ttl exceeded)' \
  || fail "no time-exceeded from 192.168.252.1 for TTL 1: $(printf '%s\n' "$out" | tail -n1)"
out=$(host_exec int /usr/bin/ping -c 3 -t 2 -W 2 10.0.0.1 2>&1)
printf '%s\n' "$out" | grep -Eq '3 packets transmitted, 3 received' \
  || fail "TTL 2 does not reach the outside host: $(printf '%s\n' "$out" | grep transmitted)"
