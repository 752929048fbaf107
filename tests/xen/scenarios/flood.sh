# flood: a 10,000-packet flood ping (iputils ping -f) to each of the
# bridge's addresses loses nothing.
# timeout: 480
. /tests/netlib.sh
bridge_up
for role in ext int mgmt; do
  addr=$(bridge_addr "$role")
  ping_ok "$role" "$addr" || ping_ok "$role" "$addr" || fail "$role: $addr does not answer a single ping"
  start=$(ts)
  out=$(host_exec "$role" /usr/bin/ping -f -c 10000 -W 1 "$addr" 2>&1) || true
  end=$(ts)
  stats=$(printf '%s\n' "$out" | grep -E 'packets transmitted')
  rate=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", 10000 / (b - a) }')
  note "$role $addr: $stats; ${rate} pkt/s"
  echo "METRIC flood_pps_$role $rate"
  printf '%s\n' "$stats" | grep -Eq '10000 packets transmitted, 10000 received' \
    || fail "$role: flood ping $addr: ${stats:-$(printf '%s\n' "$out" | tail -n1)}"
done
