# snat-tcp: an internal host (default route via the bridge) downloads a
# 4 MiB random file with busybox wget from an HTTP server (busybox httpd)
# on an external host, through the bridge's source NAT: the sha256
# matches, and the server saw only the bridge's external address as the
# client (httpd's log; and a flowgen server told 20 more connections the
# address it saw them as). Measures the download rate.
# timeout: 300
. /tests/netlib.sh
EXT=$(bridge_addr ext)          # 10.0.0.2, what the outside must see
SRV=$(host_addr ext)            # 10.0.0.1
nat_up
through_bridge int "$SRV"

www=/tmp/snat-tcp/ext-www
rm -rf /tmp/snat-tcp; mkdir -p "$www"
head -c 4194304 /dev/urandom > "$www/file.bin"
want=$(sha256sum < "$www/file.bin" | cut -d' ' -f1)
bg_start httpd ext busybox httpd -f -v -p "$SRV:80" -h "$www"
for _ in $(seq 50); do
  host_exec ext netstat -ltn 2>/dev/null | grep -q "$SRV:80 " && break
  sleep 0.2
done
host_exec ext netstat -ltn 2>/dev/null | grep -q "$SRV:80 " || fail "httpd in ext does not listen: $(tail -n1 "$(bg_out httpd)")"

# busybox 1.35's wget crashes with -T: bound it with timeout instead.
note "int: wget http://$SRV/file.bin"
t0=$(ts)
host_exec int timeout 180 wget -q -O /tmp/snat-tcp/dl.bin "http://$SRV/file.bin"
rc=$?
t1=$(ts)
[ $rc = 0 ] || fail "wget from int through the bridge failed (status $rc; 143 = killed by the 180 s timeout), got $(stat -c %s /tmp/snat-tcp/dl.bin 2>/dev/null || echo 0) of 4194304 bytes"
got=$(sha256sum < /tmp/snat-tcp/dl.bin | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "sha256 mismatch: downloaded $(stat -c %s /tmp/snat-tcp/dl.bin) bytes, sha256 $got, want $want"
rate=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 4096 / (b - a) }')
note "4 MiB in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s, sha256 matches"
echo "METRIC snat_tcp_kib_s $rate"

# httpd -v logs "IP:PORT: url:..." per request.
clients=$(sed -n 's/^\([0-9.]*\):[0-9]*: .*/\1/p' "$(bg_out httpd)" | sort -u | tr '\n' ' ' | sed 's/ $//')
note "httpd saw clients: ${clients:-none}"
[ "$clients" = "$EXT" ] || fail "httpd saw clients '${clients:-none}', want only $EXT"

# The same with flowgen: the server reports the address it saw to the
# client, and logs every distinct one.
flowgen_bg srv ext tcp-server --listen "$SRV:7000" --reply 1000
out=$(host_exec int "$FLOWGEN" tcp-clients --connect "$SRV:7000" --count 20 --concurrency 5 --timeout-ms 20000)
rc=$?
note "flowgen: $(summary "$out")"
[ $rc = 0 ] || fail "flowgen tcp-clients from int: $(summary "$out") $(printf '%s\n' "$out" | grep '^error' | head -n1)"
[ "$(field peers "$(summary "$out")")" = "$EXT" ] || fail "flowgen server saw peers '$(field peers "$(summary "$out")")', want only $EXT"
[ "$(bg_peers srv)" = "$EXT" ] || fail "flowgen server logged peers '$(bg_peers srv)', want only $EXT"
