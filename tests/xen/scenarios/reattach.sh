# reattach: the internal vif (devid 1) is detached and attached again with
# the same devid and MAC; it answers again, and the other two vifs answer
# throughout.
# timeout: 300
. /tests/netlib.sh
bridge_up
ping_ok int "$(bridge_addr int)" || ping_ok int "$(bridge_addr int)" || fail "int does not answer before the detach"
domid=$(xl domid "$PIH_DOM")
mac=$(xenstore-read "/local/domain/$domid/device/vif/1/mac") || fail "no mac for vif 1"

# Background pings on the other two segments for the whole operation.
for role in ext mgmt; do
  host_exec "$role" ping -c 150 -i 0.2 -W 1 "$(bridge_addr "$role")" > "/tmp/reattach-$role.out" 2>&1 &
done

note "detach vif 1 ($mac)"
xl network-detach "$PIH_DOM" 1 || fail "xl network-detach failed"
expect_log "$PIH_DOM" 'vif 1: (backend gone|device removed)' 30
ping_ok int "$(bridge_addr int)" && fail "int still answers after the detach"
note "attach vif 1 again"
xl network-attach "$PIH_DOM" bridge=br0 mac="$mac" devid=1 || fail "xl network-attach failed"
wait_ping int "$(bridge_addr int)" 30 || fail "int does not answer after the re-attach"
note "int answers again"
grep -Eq 'vif 1: connected' <(tr -d '\r' < "$(console_log "$PIH_DOM")") || fail "no reconnect logged"
wait
for role in ext mgmt; do
  stats=$(grep -E 'packets transmitted' "/tmp/reattach-$role.out")
  note "$role during reattach: $stats"
  printf '%s\n' "$stats" | grep -Eq '150 packets transmitted, 150 (packets )?received' \
    || fail "$role stopped answering during the reattach: $stats"
done
# Do the same once more: nothing leaked on the first round.
xl network-detach "$PIH_DOM" 1 || fail "second detach failed"
expect_log "$PIH_DOM" 'vif 1: (backend gone|device removed)' 30
xl network-attach "$PIH_DOM" bridge=br0 mac="$mac" devid=1 || fail "second attach failed"
wait_ping int "$(bridge_addr int)" 30 || fail "int does not answer after the second re-attach"
log_has "$PIH_DOM" 'grants still mapped' && fail "grants were left mapped after a detach"
true
# Every connection holds the same number of grants: the count logged after
# the last reconnect equals the one after the first boot.
first=$(tr -d '\r' < "$(console_log "$PIH_DOM")" | grep -Eo 'net: [0-9]+ grants active' | sed -n 3p)
last=$(tr -d '\r' < "$(console_log "$PIH_DOM")" | grep -Eo 'net: [0-9]+ grants active' | tail -n1)
note "grants after boot: $first; after two reattaches: $last"
[ -n "$first" ] && [ "$first" = "$last" ] || fail "grant count changed across reattach: '$first' -> '$last'"
