# irmin-outage: with the Irmin server stopped, inserts and removes still
# take effect at once and answer "persisted":false; /health shows the
# backlog; once Irmin is back the journal is flushed in order and the
# store holds exactly what the bridge enforces. Then Irmin answers every
# write with a resolver error (read-only): the same, until it accepts
# writes again.
# timeout: 420
. /tests/netlib.sh
rm -rf "$IRMIN_ROOT"
NAT_ROLES="mgmt" NAT_BEFORE_CREATE=irmin_start nat_up "$(irmin_cmdline)"
expect_log "$PIH_DOM" 'irmin: 0 rules restored' 60
flowgen_bg svc int tcp-server --listen 192.168.252.10:7001
irmin_stop
note "irmin stopped"

ans=$(pihctl_json insert 10.0.0.1 192.168.252.10:7001) || fail "insert during the outage: $ans"
note "insert 1: $ans"
[ "$(json_val persisted "$ans")" = false ] || fail "want persisted:false during the outage: $ans"
port=$(json_num port "$ans")
out=$(host_exec ext "$FLOWGEN" tcp-clients --connect "10.0.0.2:$port" --count 2 --timeout-ms 10000)
note "client during the outage: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 2 ] || fail "the rule inserted during the outage does not work: $(summary "$out")"
ans=$(pihctl_json insert 10.0.0.1 192.168.252.10:7002 --port 30002) || fail "insert 2: $ans"
note "insert 2: $ans"
[ "$(json_val persisted "$ans")" = false ] || fail "want persisted:false: $ans"
ans=$(pihctl_json rm 1) || fail "remove during the outage: $ans"
note "remove 1: $ans"
[ "$(json_val persisted "$ans")" = false ] || fail "want persisted:false: $ans"
out=$(host_exec ext "$FLOWGEN" tcp-clients --connect "10.0.0.2:$port" --count 1 --timeout-ms 3000 --expect-ok 0)
[ "$(field ok "$(summary "$out")")" = 0 ] || fail "rule 1 still works after its removal"

health=$(pihctl_json health)
note "health during the outage: $health"
[ "$(json_num backlog "$health")" = 3 ] || fail "want a backlog of 3 changes: $health"
printf '%s\n' "$health" | grep -q '"status":"degraded"' || fail "health does not say degraded: $health"
printf '%s\n' "$health" | grep -q '"state":"retrying"' || fail "persistence is not retrying: $health"
stats=$(pihctl_json stats)
[ "$(json_num backlog "$stats")" = 3 ] || fail "stats do not show the backlog: $stats"
[ ! -e "$IRMIN_RULES" ] || fail "the store changed while Irmin was down?"

irmin_start
note "irmin started again"
t0=$(date +%s)
wait_flushed 90 || fail "backlog not flushed within 90 s: $(pihctl_json health)"
echo "METRIC backlog_flushed_after_s $(( $(date +%s) - t0 ))"
health=$(pihctl_json health)
note "health after: $health"
printf '%s\n' "$health" | grep -q '"status":"ok"' || fail "health not ok after the flush: $health"
[ ! -e "$IRMIN_RULES/1" ] || fail "rule 1 was removed but its document is in the store: $(cat "$IRMIN_RULES/1")"
[ -f "$IRMIN_RULES/2" ] || fail "rule 2 is not in the store: $(ls -R "$IRMIN_ROOT" | tr '\n' ' ')"
grep -q '"port":30002' "$IRMIN_RULES/2" || fail "rule 2's document: $(cat "$IRMIN_RULES/2")"
# In order: insert 1, insert 2, remove 1.
order=$(sed -n 's/.*"message":"\([a-z]*\) rule \([0-9]*\).*/\1 \2/p' "$IRMIN_ROOT/main/commits" | tr '\n' ',')
note "commits: $order"
[ "$order" = "insert 1,insert 2,remove 1," ] || fail "the journal was not flushed in order: $order"

ans=$(pihctl_json insert 10.0.0.1 192.168.252.10:7003) || fail "insert after the outage: $ans"
note "insert 3: $ans"
[ "$(json_val persisted "$ans")" = true ] || fail "want persisted:true once Irmin is back: $ans"

# Irmin up but refusing writes (200 with errors and a null field).
irmin_stop
irmin_start --read-only
note "irmin read-only"
ans=$(pihctl_json insert 10.0.0.1 192.168.252.10:7004) || fail "insert with a read-only Irmin: $ans"
note "insert 4: $ans"
[ "$(json_val persisted "$ans")" = false ] || fail "want persisted:false while Irmin refuses writes: $ans"
end=$(( $(date +%s) + 20 ))
until health=$(pihctl_json health); printf '%s\n' "$health" | grep -q 'read-only'; do
  [ "$(date +%s)" -ge "$end" ] && fail "health does not report Irmin's error: $health"
  sleep 1
done
note "health with a read-only Irmin: $health"
[ "$(json_num backlog "$health")" = 1 ] || fail "want a backlog of 1: $health"
[ ! -e "$IRMIN_RULES/4" ] || fail "a read-only Irmin stored rule 4?"
irmin_stop
irmin_start
wait_flushed 90 || fail "backlog not flushed after Irmin accepted writes again: $(pihctl_json health)"
[ -f "$IRMIN_RULES/4" ] || fail "rule 4 is not in the store after the flush"
