# snat-udp-icmp: UDP request/response from an internal host to an
# external echo server through the bridge (the server sees the bridge's
# external address, one mapping for the socket), and 20/20 pings from the
# internal host to the external one.
# timeout: 240
. /tests/netlib.sh
EXT=$(bridge_addr ext)
SRV=$(host_addr ext)
nat_up
through_bridge int "$SRV"

flowgen_bg echo ext udp-echo --listen "$SRV:5353"
out=$(host_exec int "$FLOWGEN" udp-ping --to "$SRV:5353" --count 50 --timeout-ms 3000)
rc=$?
line=$(summary "$out")
note "udp-ping: $line"
[ $rc = 0 ] || fail "udp-ping from int through the bridge: ${line:-$(printf '%s\n' "$out" | tail -n1)}"
peers=$(field peers "$line")
case "$peers" in
  "$EXT":[0-9]*) ;;
  *) fail "echo server saw source(s) '$peers', want one $EXT:PORT" ;;
esac
[ "$(bg_peers echo)" = "$EXT" ] || fail "echo server logged peers '$(bg_peers echo)', want only $EXT"
ms=$(field elapsed_ms "$line")
echo "METRIC snat_udp_rtt_us $(( ms * 1000 / 50 ))"

# A second socket gets a mapping of its own, still on the external address.
out=$(host_exec int "$FLOWGEN" udp-ping --to "$SRV:5353" --count 5 --timeout-ms 3000)
rc=$?
line2=$(summary "$out")
note "second socket: $line2"
[ $rc = 0 ] || fail "second udp-ping from int: $line2"
case "$(field peers "$line2")" in "$EXT":[0-9]*) ;; *) fail "second socket seen as '$(field peers "$line2")'" ;; esac

out=$(host_exec int ping -c 20 -i 0.2 -W 2 "$SRV" 2>&1)
stats=$(printf '%s\n' "$out" | grep -E 'packets transmitted')
note "ping int -> $SRV: $stats"
printf '%s\n' "$stats" | grep -Eq '20 packets transmitted, 20 (packets )?received' \
  || fail "ping from int to $SRV through the bridge: ${stats:-$(printf '%s\n' "$out" | tail -n1)}"
rtt=$(printf '%s\n' "$out" | sed -n 's|^rtt .* = [0-9.]*/\([0-9.]*\)/.*|\1|p')
[ -n "$rtt" ] && echo "METRIC snat_icmp_rtt_ms $rtt"
true
