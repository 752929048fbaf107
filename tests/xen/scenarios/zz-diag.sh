t() { local a b; a=$(cut -d' ' -f1 /proc/uptime); for i in 1 2 3 4 5; do "$@" >/dev/null 2>&1; done; b=$(cut -d' ' -f1 /proc/uptime); echo "$(awk -v a=$a -v b=$b 'BEGIN{printf "%.3f", (b-a)/5}') s: $*"; }
t /bin/busybox true
t /bin/bash -c true
t xenstore-read /local/domain/0/name
t ip link show lo
t /bin/bash -c '. /etc/xen/scripts/vif-common.sh' 
t sed -n 1p /etc/passwd
t stat -L -c %i /dev/null
cat /proc/cpuinfo | grep -m1 flags
fail "diag"
