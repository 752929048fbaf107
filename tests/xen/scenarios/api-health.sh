# api-health: the management API answers on vif 2 (smoltcp TCP stack):
# GET /health from the management segment gives 200 with status ok, and
# the answer carries the API version header.
# timeout: 180
. /tests/netlib.sh
net_hosts_up
pih_create
expect_log "$PIH_DOM" 'ready' 60
wait_vif_connected mgmt 60
expect_log "$PIH_DOM" 'mgmt: API on 10\.0\.1\.3:8080' 30
ok=0
for _ in 1 2 3 4 5; do ping_ok mgmt 10.0.1.3 && { ok=1; break; }; done
[ "$ok" = 1 ] || fail "10.0.1.3 does not answer ping"
out=$(host_exec mgmt timeout 20 busybox wget -S -q -O - http://10.0.1.3:8080/health 2>&1)
note "$out"
printf '%s\n' "$out" | grep -q '"status":"ok"' || fail "GET /health: $(printf '%s\n' "$out" | tail -n2 | tr '\n' ' ')"
printf '%s\n' "$out" | grep -qi 'X-Pih-Api: 1' || fail "no X-Pih-Api header in: $(printf '%s\n' "$out" | head -n3 | tr '\n' ' ')"
out=$(host_exec mgmt timeout 20 busybox wget -q -O - http://10.0.1.3:8080/nope 2>&1)
printf '%s\n' "$out" | grep -q '404' || fail "GET /nope: want 404, got: $out"
