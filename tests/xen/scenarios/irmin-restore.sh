# irmin-restore: with irmin= the bridge persists the gatekeeper's rules in
# the Irmin store (one JSON document per rule under bridge/rules/<id>);
# after xl destroy + xl create it reads them back before the API serves:
# the same rules, ids and external ports (and the TTL keeps running), and
# the external clients connect again without the gatekeeper doing anything.
# A rule whose TTL ran out while the bridge was down is not reinstalled and
# its document goes; one that runs out while it runs goes from the store too.
# timeout: 480
. /tests/netlib.sh
rm -rf "$IRMIN_ROOT"
NAT_ROLES="ext2 mgmt" NAT_BEFORE_CREATE=irmin_start nat_up "$(irmin_cmdline)"
expect_log "$PIH_DOM" 'irmin: 0 rules restored' 60
for p in 7001 7002 7003; do flowgen_bg "svc$p" int tcp-server --listen "192.168.252.10:$p"; done

declare -A PORT
insert() { # NAME CLIENT SERVICE [OPTS...]
  local name=$1 ans
  shift
  ans=$(pihctl_json insert "$@") || fail "pihctl insert $*: $ans"
  note "insert $*: $ans"
  [ "$(json_val persisted "$ans")" = true ] || fail "insert $* was not persisted: $ans"
  PORT[$name]=$(json_num port "$ans")
  [ -n "${PORT[$name]}" ] || fail "no port in '$ans'"
}
insert a 10.0.0.1 192.168.252.10:7001
insert b 10.0.0.1 192.168.252.10:7002 --ttl 3600
insert c 10.0.0.3 192.168.252.10:7003 --port 30003
[ "${PORT[c]}" = 30003 ] || fail "rule c got port ${PORT[c]}, asked 30003"

for id in 1 2 3; do
  [ -f "$IRMIN_RULES/$id" ] || fail "no document $IRMIN_RULES/$id in the store: $(ls -R "$IRMIN_ROOT" | tr '\n' ' ')"
  note "store bridge/rules/$id: $(cat "$IRMIN_RULES/$id")"
done
grep -q "\"port\":${PORT[a]}" "$IRMIN_RULES/1" || fail "document 1 lacks port ${PORT[a]}"
commits=$(wc -l < "$IRMIN_ROOT/main/commits")
note "commits: $commits, last: $(tail -n1 "$IRMIN_ROOT/main/commits")"
tail -n1 "$IRMIN_ROOT/main/commits" | grep -q '"author":"pih-bridge"' || fail "commit author is not the bridge's name"

connect() { # ROLE PORT WHAT
  local out
  out=$(host_exec "$1" "$FLOWGEN" tcp-clients --connect "10.0.0.2:$2" --count 2 --timeout-ms 10000)
  note "$3: $(summary "$out")"
  [ "$(field ok "$(summary "$out")")" = 2 ] || fail "$3: $(summary "$out")"
}
connect ext "${PORT[a]}" "rule a before restart"
connect ext2 "${PORT[c]}" "rule c before restart"

before=$(pihctl_json list)
note "rules before: $before"
# A rule whose TTL runs out while the bridge is down.
insert d 10.0.0.3 192.168.252.10:7002 --ttl 2
[ -f "$IRMIN_RULES/4" ] || fail "no document for rule 4"
log_mark "$PIH_DOM"
t0=$(ts)
xl destroy "$PIH_DOM" || fail "xl destroy failed"
wait_domain_gone "$PIH_DOM" 30 || fail "$PIH_DOM still exists after xl destroy"
pih_create "$(irmin_cmdline)"
expect_log "$PIH_DOM" 'ready' 60
expect_log "$PIH_DOM" 'irmin: 3 rules restored, 0 documents skipped, 1 not reinstalled' 60
expect_log "$PIH_DOM" 'irmin: rule 4 not restored: its TTL ran out' 5
t1=$(ts)
echo "METRIC destroy_to_restored_s $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
wait_vif_connected ext 60
wait_vif_connected int 60
for r in ext ext2 int mgmt; do
  wait_ping "$r" "$(bridge_addr "$r")" 20 || fail "$r: the bridge does not answer after the restart"
done

after=$(pihctl_json list)
note "rules after: $after"
for n in a b c; do
  printf '%s\n' "$after" | grep -q "\"port\":${PORT[$n]}" || fail "rule $n (port ${PORT[$n]}) is not back: $after"
done
[ "$(json_num total "$after")" = 3 ] || fail "want 3 rules after the restart: $after"
r2=$(printf '%s\n' "$after" | grep -o '{[^}]*"id":2,[^}]*}')
left=$(json_num expires_in "$r2")
note "rule 2 after the restart: $r2"
[ -n "$left" ] && [ "$left" -gt 3000 ] && [ "$left" -le 3600 ] || fail "rule 2 lost its TTL: $r2"

connect ext "${PORT[a]}" "rule a after restart"
connect ext "${PORT[b]}" "rule b after restart"
connect ext2 "${PORT[c]}" "rule c after restart"
out=$(host_exec ext2 "$FLOWGEN" tcp-clients --connect "10.0.0.2:${PORT[a]}" --count 1 --timeout-ms 3000 --expect-ok 0)
[ "$(field ok "$(summary "$out")")" = 0 ] || fail "after the restart another host used rule a's port"

wait_gone() { # FILE WHAT
  local end=$(( $(date +%s) + 15 ))
  while [ -e "$1" ]; do
    [ "$(date +%s)" -ge "$end" ] && fail "$2: $(cat "$1")"
    sleep 0.5
  done
}
wait_gone "$IRMIN_RULES/4" "the expired rule 4's document is still in the store"

ans=$(pihctl_json insert 10.0.0.3 192.168.252.10:7001) || fail "insert after restart: $ans"
note "new rule after restart: $ans"
[ "$(json_num id "$ans")" = 5 ] || fail "ids do not continue after the stored ones: $ans"
[ "$(json_val persisted "$ans")" = true ] || fail "not persisted: $ans"
[ -f "$IRMIN_RULES/5" ] || fail "no document for rule 5"

# A TTL that runs out while the bridge runs: its document goes too.
insert e 10.0.0.1 192.168.252.10:7003 --ttl 2
wait_gone "$IRMIN_RULES/6" "rule 6 expired but its document is still in the store"
tail -n1 "$IRMIN_ROOT/main/commits" | grep -q '"message":"remove rule 6' \
  || fail "the last commit is not rule 6's removal: $(tail -n1 "$IRMIN_ROOT/main/commits")"
printf '%s\n' "$(pihctl_json list)" | grep -q '"id":6,' && fail "rule 6 is still listed after its TTL"
true
