# ping: each of the bridge's three addresses answers 100/100 pings from a
# host on its segment, with small and with 1472-byte payloads (a full
# 1500-byte IP packet).
# timeout: 240
. /tests/netlib.sh
bridge_up
for role in ext int mgmt; do
  addr=$(bridge_addr "$role")
  for size in 56 1472; do
    out=$(host_exec "$role" ping -c 100 -i 0.02 -W 2 -s "$size" "$addr" 2>&1) || true
    note "$role $addr size $size: $(printf '%s\n' "$out" | grep -E 'packets transmitted')"
    printf '%s\n' "$out" | grep -Eq '100 packets transmitted, 100 (packets )?received' \
      || fail "$role: ping -s $size $addr: $(printf '%s\n' "$out" | grep -E 'transmitted' || printf '%s\n' "$out" | tail -n1)"
  done
done
