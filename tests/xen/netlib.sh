# Network helpers for dom0 scenarios: test hosts are network namespaces
# joined to br0/br1 by veth pairs. dom0 itself has no address on the
# bridges and does not forward, so the bridge domain is the only path
# between the segments.
#
#   role  namespace   bridge  host address      the bridge's address
#   ext   pih-ext     br0     10.0.0.1/24       10.0.0.2   (the host is also the gateway)
#   ext2  pih-ext2    br0     10.0.0.3/24       10.0.0.2   (a second outside host)
#   int   pih-int     br0     192.168.252.10/24 192.168.252.1 (default route via the bridge)
#   mgmt  pih-mgmt    br1     10.0.1.1/24       10.0.1.3

declare -A NET_BRIDGE=([ext]=br0 [ext2]=br0 [int]=br0 [mgmt]=br1)
declare -A NET_HOST=([ext]=10.0.0.1/24 [ext2]=10.0.0.3/24 [int]=192.168.252.10/24 [mgmt]=10.0.1.1/24)
declare -A NET_BRIDGE_ADDR=([ext]=10.0.0.2 [ext2]=10.0.0.2 [int]=192.168.252.1 [mgmt]=10.0.1.3)
declare -A NET_DEVID=([ext]=0 [int]=1 [mgmt]=2)

# bridge_addr ROLE: the bridge's address on that segment.
bridge_addr() { echo "${NET_BRIDGE_ADDR[$1]}"; }

# host_addr ROLE: the test host's address (without prefix).
host_addr() { echo "${NET_HOST[$1]%/*}"; }

# host_exec ROLE CMD...: run CMD inside the host's namespace.
host_exec() { local r=$1; shift; ip netns exec "pih-$r" "$@"; }

# net_host_up ROLE: create the namespace and its veth on the bridge.
net_host_up() {
  local r=$1 ns="pih-$1" veth="v-$1"
  ip netns del "$ns" 2>/dev/null
  ip link del "$veth" 2>/dev/null
  ip netns add "$ns" || fail "ip netns add $ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns" || fail "veth for $ns"
  ip link set "$veth" master "${NET_BRIDGE[$r]}" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "${NET_HOST[$r]}" dev eth0
  ip -n "$ns" link set eth0 up
  if [ "$r" = int ]; then
    ip -n "$ns" route add default via "${NET_BRIDGE_ADDR[int]}"
  fi
}

# net_hosts_up [ROLES...]: ext, int and mgmt by default.
net_hosts_up() {
  local r
  [ $# -gt 0 ] || set -- ext int mgmt
  for r in "$@"; do net_host_up "$r"; done
}

# wait_vif_connected ROLE TIMEOUT_S: the guest logged that vif connected.
wait_vif_connected() {
  expect_log "$PIH_DOM" "vif ${NET_DEVID[$1]}: connected" "$2"
}

# ping_ok ROLE ADDR: one ping from ROLE's host answered within 2 s.
ping_ok() { host_exec "$1" ping -c 1 -W 2 "$2" >/dev/null 2>&1; }
