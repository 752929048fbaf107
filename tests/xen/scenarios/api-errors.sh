# api-errors: with authentication on, malformed, oversized, unauthenticated
# and conflicting requests get their status codes (400, 413, 401, 405, 409)
# as JSON errors, while forwarding through the bridge goes on undisturbed.
# timeout: 300
. /tests/netlib.sh
KEY=00112233445566778899aabbccddeeff
NAT_ROLES="mgmt" nat_up 'cmdline="ext=10.0.0.2/24 gw=10.0.0.1 int=192.168.252.1/24 mgmt=10.0.1.3/24 key='$KEY'"'
BR=10.0.1.3:8080
wait_ping mgmt 10.0.1.3 20 || fail "the management address does not answer"
through_bridge int 10.0.0.1

# Forwarding in the background for the whole scenario.
bg_start fwd int ping -c 150 -i 0.2 -W 2 10.0.0.1

raw() {  # raw REQUEST-BYTES: send them, print the status line and body
  printf "$1" | host_exec mgmt timeout 10 busybox nc 10.0.1.3 8080 2>&1 | tr -d '\r'
}
expect_status() {  # expect_status CODE WHAT REQUEST-BYTES
  local out; out=$(raw "$3")
  note "$2: $(printf '%s\n' "$out" | head -n1) $(printf '%s\n' "$out" | tail -n1)"
  printf '%s\n' "$out" | head -n1 | grep -q "^HTTP/1.1 $1 " || fail "$2: want $1, got '$(printf '%s\n' "$out" | head -n1)'"
  printf '%s\n' "$out" | tail -n1 | grep -q '"error"' || fail "$2: no JSON error body: $(printf '%s\n' "$out" | tail -n1)"
}
expect_status 400 "garbage" 'GARBAGE\r\n\r\n'
expect_status 413 "oversized body" 'POST /insert HTTP/1.1\r\nHost: b\r\nContent-Length: 100000\r\n\r\n'
expect_status 401 "unsigned insert" 'POST /insert HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: 57\r\n\r\n{"ip":"10.0.0.1","dst_ip":"192.168.252.10","dst_port":22}'
expect_status 401 "forged signature" 'GET /rules HTTP/1.1\r\nHost: b\r\nAuthorization: PIH-HMAC-SHA256 ts=1796400000,sig=00\r\n\r\n'

pc() { host_exec mgmt pihctl --bridge "$BR" --key "$KEY" --json "$@"; }
out=$(pc health) || fail "signed GET /health failed: $out"
note "signed health: $out"
out=$(host_exec mgmt pihctl --bridge "$BR" --key ffeeddccbbaa99887766554433221100 --json health 2>&1); rc=$?
note "wrong key: rc=$rc $out"
[ $rc = 1 ] && printf '%s\n' "$out" | grep -qi 'auth\|401\|signature' || fail "a wrong key was not refused with 401: rc=$rc $out"
out=$(pc insert 10.0.0.1 10.9.9.9:22 2>&1); rc=$?
note "bad dst_ip: rc=$rc $out"
[ $rc = 1 ] && printf '%s\n' "$out" | grep -q 'dst_ip' || fail "an internal address outside the subnet was not refused naming dst_ip: $out"
out=$(pc insert 10.0.0.1 192.168.252.10:22 --port 40000) || fail "insert with --port 40000 failed: $out"
out=$(pc insert 10.0.0.3 192.168.252.10:23 --port 40000 2>&1); rc=$?
note "conflict: rc=$rc $out"
[ $rc = 1 ] && printf '%s\n' "$out" | grep -qi 'port\|409\|conflict\|busy' || fail "a taken port was not refused with 409: $out"
out=$(pc rm 999 2>&1); rc=$?
[ $rc = 1 ] || fail "removing an unknown rule: rc=$rc $out"

bg_wait fwd 60
stats=$(grep -E 'packets transmitted' "$(bg_out fwd)")
note "forwarding during the errors: $stats"
printf '%s\n' "$stats" | grep -Eq '150 packets transmitted, 150 (packets )?received' || fail "forwarding was disturbed: $stats"
