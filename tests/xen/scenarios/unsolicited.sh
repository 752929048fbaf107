# unsolicited: nothing gets in that the inside did not ask for. Outside
# hosts' TCP SYNs and UDP datagrams to the bridge's external address get
# no answer at all (no RST, no ICMP: the clients time out) and reach no
# internal server; neither do packets routed to the internal address
# through the bridge. A UDP mapping an internal socket opened lets in
# only its remote endpoint (address-and-port-dependent filtering). The
# internal host still reaches the outside afterwards.
# timeout: 300
. /tests/netlib.sh
EXT=$(bridge_addr ext)              # 10.0.0.2
INT_HOST=$(host_addr int)           # 192.168.252.10
SRV=$(host_addr ext)                # 10.0.0.1
NAT_ROLES=ext2 nat_up

# Servers in the internal host on the ports the outside will try.
for p in 80 7000; do flowgen_bg "int-tcp-$p" int tcp-server --listen "0.0.0.0:$p"; done
flowgen_bg int-udp-5353 int udp-echo --listen 0.0.0.0:5353

# tcp_silent ROLE IP:PORT: a SYN from ROLE gets no answer (not even RST).
tcp_silent() {
  local out rc line
  out=$(host_exec "$1" "$FLOWGEN" tcp-clients --connect "$2" --count 1 --timeout-ms 3000 --expect-ok 0)
  rc=$?
  line=$(summary "$out")
  note "$1 -> tcp $2: $line"
  [ "$(field refused "$line")" = 0 ] || fail "$1 -> tcp $2: refused (an RST came back): $line"
  [ $rc = 0 ] && [ "$(field timeout "$line")" = 1 ] \
    || fail "$1 -> tcp $2: want a silent timeout, got: ${line:-$(printf '%s\n' "$out" | tail -n1)} $(printf '%s\n' "$out" | grep '^error' | head -n1)"
}
# udp_silent ROLE IP:PORT [udp-ping options]: no echo, no ICMP error.
udp_silent() {
  local who=$1 to=$2 out rc line
  shift 2
  out=$(host_exec "$who" "$FLOWGEN" udp-ping --to "$to" --count 3 --timeout-ms 1000 --expect-ok 0 "$@")
  rc=$?
  line=$(summary "$out")
  note "$who -> udp $to${*:+ $*}: $line"
  [ "$(field refused "$line")" = 0 ] || fail "$who -> udp $to: an ICMP error came back: $line"
  [ $rc = 0 ] || fail "$who -> udp $to${*:+ $*}: want no answer, got: ${line:-$(printf '%s\n' "$out" | tail -n1)}"
}

for who in ext ext2; do
  for p in 80 7000; do tcp_silent "$who" "$EXT:$p"; done
  udp_silent "$who" "$EXT:5353"
  udp_silent "$who" "$EXT:53"
done

# Routed straight at the internal address, with the bridge as next hop.
ip -n pih-ext route add 192.168.252.0/24 via "$EXT" || fail "cannot add the route in ext"
tcp_silent ext "$INT_HOST:80"
udp_silent ext "$INT_HOST:5353"
ip -n pih-ext route del 192.168.252.0/24

for n in int-tcp-80 int-tcp-7000 int-udp-5353; do
  [ -z "$(bg_peers "$n")" ] || fail "internal server $n was reached by $(bg_peers "$n")"
done
note "no internal server saw anything"

# Address-and-port-dependent filtering: int's socket 192.168.252.10:6000
# talks to ext's echo server 10.0.0.1:5353 and gets mapped to $EXT:P.
flowgen_bg ext-echo ext udp-echo --listen "$SRV:5353"
out=$(host_exec int "$FLOWGEN" udp-ping --to "$SRV:5353" --bind "$INT_HOST:6000" --count 3 --timeout-ms 3000)
rc=$?
line=$(summary "$out")
note "int $INT_HOST:6000 -> $SRV:5353: $line"
[ $rc = 0 ] || fail "int cannot talk UDP to $SRV:5353 through the bridge: ${line:-$(printf '%s\n' "$out" | tail -n1)}"
mapped=$(field peers "$line")
case "$mapped" in "$EXT":[0-9]*) ;; *) fail "mapping seen as '$mapped', want $EXT:PORT" ;; esac
# The internal socket's port now runs an echo server: whatever gets
# through to 192.168.252.10:6000 is answered and logged.
bg_stop ext-echo
flowgen_bg int-udp-6000 int udp-echo --listen "$INT_HOST:6000"
udp_silent ext2 "$mapped"                           # another host
udp_silent ext "$mapped"                            # the host, another port
udp_silent ext "$mapped" --bind "$SRV:5354"         # ... a fixed other port
[ -z "$(bg_peers int-udp-6000)" ] || fail "the mapping $mapped let in $(bg_peers int-udp-6000), which int never talked to"
# Its own remote endpoint gets through (and the answer goes back out).
out=$(host_exec ext "$FLOWGEN" udp-ping --to "$mapped" --bind "$SRV:5353" --count 3 --timeout-ms 3000)
rc=$?
note "ext $SRV:5353 -> $mapped: $(summary "$out")"
[ $rc = 0 ] || fail "the mapping's own endpoint $SRV:5353 does not get through to int: $(summary "$out")"
[ "$(bg_peers int-udp-6000)" = "$SRV" ] || fail "int's socket saw '$(bg_peers int-udp-6000)', want $SRV"

# The inside still reaches the outside.
flowgen_bg ext-srv ext tcp-server --listen "$SRV:7000"
out=$(host_exec int "$FLOWGEN" tcp-clients --connect "$SRV:7000" --count 10 --concurrency 5 --timeout-ms 20000)
rc=$?
note "int -> $SRV:7000 afterwards: $(summary "$out")"
[ $rc = 0 ] || fail "int cannot reach $SRV:7000 after the unsolicited traffic: $(summary "$out")"
[ "$(field peers "$(summary "$out")")" = "$EXT" ] || fail "ext saw int as '$(field peers "$(summary "$out")")', want $EXT"
ping_ok int "$SRV" || ping_ok int "$SRV" || fail "int cannot ping $SRV afterwards"
