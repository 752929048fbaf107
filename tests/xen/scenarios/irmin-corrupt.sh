# irmin-corrupt: the bridge boots while Irmin is down: its API answers
# only /health ("restoring") until the rules are read back. Then documents
# in the store that are not valid rules (bad JSON, a wrong field, an id
# that does not match its path, a path that is not a rule id) are reported
# and skipped; the valid ones are restored with their ports, and nothing
# in the store is deleted. Last, 1,000 more rules in the store: a restart
# reinstalls all of them (METRIC: how long after boot the API serves).
# timeout: 420
. /tests/netlib.sh
rm -rf "$IRMIN_ROOT"
mkdir -p "$IRMIN_RULES"
doc() { # ID CLIENT DST_PORT EXT_PORT
  printf '{"v":1,"id":%s,"proto":"tcp","ip":"%s","dst_ip":"192.168.252.10","dst_port":%s,"port":%s,"expires_at":null}' "$@"
}
doc 1 10.0.0.1 7001 30001 > "$IRMIN_RULES/1"
printf '{"v":1,"id":2,"proto":"tcp",' > "$IRMIN_RULES/2"
doc 3 10.0.0.1 7003 30003 > "$IRMIN_RULES/3"
doc 4 10.0.0.1 7004 30004 | sed 's/"ip":"10.0.0.1"/"ip":"10.0.0.999"/' > "$IRMIN_RULES/4"
doc 9 10.0.0.1 7005 30005 > "$IRMIN_RULES/5"
doc 6 10.0.0.1 7006 30006 > "$IRMIN_RULES/notanid"
for f in "$IRMIN_RULES"/*; do note "store ${f#"$IRMIN_ROOT"/}: $(cat "$f")"; done

NAT_ROLES="mgmt" nat_up "$(irmin_cmdline)"
wait_ping mgmt 10.0.1.3 20 || fail "the management address does not answer"
health=$(pihctl_json health)
note "health with Irmin down: $health"
printf '%s\n' "$health" | grep -q '"status":"restoring"' || fail "health does not say restoring: $health"
ans=$(pihctl_json insert 10.0.0.3 192.168.252.10:7001 2>&1) && fail "insert answered while restoring: $ans"
note "insert while restoring: $ans"
printf '%s\n' "$ans" | grep -q 'restoring' || fail "insert while restoring: want the 503 restoring answer, got: $ans"
irmin_start
note "irmin started"
expect_log "$PIH_DOM" 'irmin: 2 rules restored, 4 documents skipped' 60
for what in 'rules/2' 'rules/4' 'rules/5' 'rules/notanid'; do
  expect_log "$PIH_DOM" "irmin: skipped .*$what" 5
done
tr -d '\r' < "$(console_log "$PIH_DOM")" | grep 'irmin: skipped' | while read -r l; do note "console: $l"; done

list=$(pihctl_json list)
note "rules: $list"
[ "$(json_num total "$list")" = 2 ] || fail "want the 2 valid rules: $list"
printf '%s\n' "$list" | grep -q '"id":1,[^}]*"port":30001' || fail "rule 1 not restored on port 30001: $list"
printf '%s\n' "$list" | grep -q '"id":3,[^}]*"port":30003' || fail "rule 3 not restored on port 30003: $list"
flowgen_bg svc int tcp-server --listen 192.168.252.10:7001
out=$(host_exec ext "$FLOWGEN" tcp-clients --connect 10.0.0.2:30001 --count 2 --timeout-ms 10000)
note "client on rule 1: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 2 ] || fail "restored rule 1 does not work: $(summary "$out")"
for f in 2 4 5 notanid; do
  [ -f "$IRMIN_RULES/$f" ] || fail "the invalid document $f was deleted from the store"
done
ans=$(pihctl_json insert 10.0.0.3 192.168.252.10:7001) || fail "insert: $ans"
note "insert: $ans"
[ "$(json_num id "$ans")" -gt 5 ] || fail "a new rule got an id whose path the store already uses: $ans"

# Scale: 1,000 more documents, then a restart.
for i in $(seq 1000 1999); do
  doc "$i" 10.0.0.1 $((i + 10000)) $((i + 40000)) > "$IRMIN_RULES/$i"
done
total=$(json_num total "$(pihctl_json list)")
log_mark "$PIH_DOM"
xl destroy "$PIH_DOM" || fail "xl destroy failed"
wait_domain_gone "$PIH_DOM" 30 || fail "$PIH_DOM still exists after xl destroy"
pih_create "$(irmin_cmdline)"
expect_log "$PIH_DOM" "irmin: $((total + 1000)) rules restored, 4 documents skipped" 120
line=$(tail -n "+$((LOG_SKIP + 1))" "$(console_log "$PIH_DOM")" | tr -d '\r' | grep 'rules restored' | tail -n1)
note "$line"
echo "METRIC restored_rules $((total + 1000))"
echo "METRIC api_serving_after_boot_ms $(printf '%s\n' "$line" | sed -n 's/.*(\([0-9]*\) ms after boot).*/\1/p')"
wait_ping mgmt 10.0.1.3 20 || fail "the management address does not answer after the restart"
list=$(pihctl_json list)
[ "$(json_num total "$list")" = $((total + 1000)) ] || fail "want $((total + 1000)) rules after the restart: $(json_num total "$list")"
flowgen_bg svc2 int tcp-server --listen 192.168.252.10:11999
wait_ping ext 10.0.0.2 20 || fail "the external address does not answer after the restart"
out=$(host_exec ext "$FLOWGEN" tcp-clients --connect 10.0.0.2:41999 --count 2 --timeout-ms 10000)
note "client on rule 1999: $(summary "$out")"
[ "$(field ok "$(summary "$out")")" = 2 ] || fail "restored rule 1999 does not work: $(summary "$out")"
