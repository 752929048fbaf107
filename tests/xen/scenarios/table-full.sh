# table-full: a bridge with a 64-flow translation table. 64 TCP
# connections from the inside are opened and held; further new flows
# (TCP, UDP, ICMP) are refused silently (the clients time out; no RST)
# and the refusals are logged; the 64 held connections keep exchanging
# data through the bridge afterwards.
# timeout: 300
. /tests/netlib.sh
EXT=$(bridge_addr ext)
SRV=$(host_addr ext)
FLOWS=64
# No ping through the bridge before the flows: it would take a slot.
nat_up "cmdline=\"ext=$EXT/24 gw=$SRV int=$(bridge_addr int)/24 mgmt=$(bridge_addr mgmt)/24 auth=off flows=$FLOWS\""
flowgen_bg srv ext tcp-server --listen "$SRV:7000"
flowgen_bg echo ext udp-echo --listen "$SRV:5353"

ready=/tmp/table-full.ready gate=/tmp/table-full.gate
rm -f "$ready" "$gate"
note "int: $FLOWS held connections"
bg_start held int "$FLOWGEN" tcp-clients --connect "$SRV:7000" --count $FLOWS --together \
  --rounds 2 --ready "$ready" --gate "$gate" --gate-timeout-ms 200000 --timeout-ms 30000
for _ in $(seq 300); do [ -f "$ready" ] && break; bg_alive held || break; sleep 0.2; done
[ -f "$ready" ] || fail "the $FLOWS connections did not finish their first exchange in 60 s: $(tail -n2 "$(bg_out held)" | tr '\n' ' ')"
first=$(cat "$ready")
note "first exchange of the $FLOWS: $first"
[ "$(field ok "$first")" = $FLOWS ] || fail "only $(field ok "$first") of $FLOWS flows worked on a $FLOWS-flow table: $first"

# The table is full: new flows get no answer at all.
out=$(host_exec int "$FLOWGEN" tcp-clients --connect "$SRV:7000" --count 8 --timeout-ms 4000 --expect-ok 0)
rc=$?
line=$(summary "$out")
note "8 more TCP: $line"
[ "$(field refused "$line")" = 0 ] || fail "new TCP flows on a full table were refused with an RST: $line"
[ "$(field ok "$line")" = 0 ] || fail "$(field ok "$line") new TCP flows got through a full $FLOWS-flow table"
[ $rc = 0 ] || fail "new TCP flows on a full table: want silent timeouts, got: $line $(printf '%s\n' "$out" | grep '^error' | head -n1)"
out=$(host_exec int "$FLOWGEN" udp-ping --to "$SRV:5353" --count 2 --timeout-ms 2000 --expect-ok 0)
rc=$?
note "UDP: $(summary "$out")"
[ $rc = 0 ] || fail "a new UDP flow on a full table: $(summary "$out")"
host_exec int ping -c 2 -W 2 "$SRV" >/dev/null 2>&1 && fail "a new ICMP flow got through a full table"
[ -z "$(bg_peers echo)" ] || fail "the echo server was reached by $(bg_peers echo) while the table was full"

# The held connections still work.
touch "$gate"
bg_wait held 60
rc=$?
line=$(summary "$(cat "$(bg_out held)")")
note "second exchange of the $FLOWS: $line"
[ $rc = 0 ] || fail "the $FLOWS held connections broke while the table was full: ${line:-status $rc} $(grep '^error' "$(bg_out held)" | head -n1)"
[ "$(field peers "$line")" = "$EXT" ] || fail "server saw peers '$(field peers "$line")', want only $EXT"

expect_log "$PIH_DOM" 'table full' 15
refused=$(tr -d '\r' < "$(console_log "$PIH_DOM")" | sed -n 's/.*refused \([0-9][0-9]*\) new flows.*/\1/p' | tail -n1)
note "bridge: $(tr -d '\r' < "$(console_log "$PIH_DOM")" | grep 'table full' | tail -n1)"
[ -n "$refused" ] && echo "METRIC table_full_refused $refused"
# 8 SYNs, 2 datagrams and 2 echo requests at least (retransmissions too).
[ "${refused:-0}" -ge 12 ] || fail "the bridge counted ${refused:-no} refused flows, want at least 12"
true
