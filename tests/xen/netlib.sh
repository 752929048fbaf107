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

# ---------------------------------------------------------------------------
# NAT scenarios: flowgen (tools/flowgen, in dom0's /usr/local/bin) and
# background processes in the test hosts.

FLOWGEN=${FLOWGEN:-/usr/local/bin/flowgen}

# need_flowgen: fail unless the traffic generator made it into dom0.
need_flowgen() {
  [ -x "$FLOWGEN" ] || fail "flowgen is not in dom0 (make tools builds build/tools/flowgen; mkinitramfs.sh installs it)"
  "$FLOWGEN" --help >/dev/null 2>&1 || fail "flowgen does not run in dom0: $("$FLOWGEN" --help 2>&1 | tail -n1)"
}

# Background processes: bg_start NAME ROLE CMD... runs CMD in ROLE's
# namespace with stdout+stderr in $(bg_out NAME). All of them are killed
# when the scenario exits (the runner only deletes the namespaces, and a
# process keeps its namespace alive).
declare -A BG_PID=()
AT_EXIT=()
# at_exit CMD: eval CMD when the scenario exits (after the background
# processes are stopped), e.g. to restore a dom0 sysctl.
at_exit() { AT_EXIT+=("$1"); trap net_exit EXIT; }
net_exit() {
  local c
  bg_stop_all
  for c in "${AT_EXIT[@]}"; do eval "$c"; done
}
bg_out() { echo "/tmp/bg-$1.out"; }
bg_start() {
  local name=$1 role=$2
  shift 2
  trap net_exit EXIT
  : > "$(bg_out "$name")"
  # ip netns exec execs CMD: $! is CMD's pid.
  ip netns exec "pih-$role" "$@" >> "$(bg_out "$name")" 2>&1 &
  BG_PID[$name]=$!
}
bg_alive() { [ -n "${BG_PID[$1]:-}" ] && kill -0 "${BG_PID[$1]}" 2>/dev/null; }
# bg_wait NAME TIMEOUT_S: wait for it to exit; its status, or 124.
bg_wait() {
  local end=$(( $(date +%s) + $2 ))
  while bg_alive "$1"; do
    [ "$(date +%s)" -ge "$end" ] && return 124
    sleep 0.2
  done
  wait "${BG_PID[$1]}"
}
bg_stop() {
  local pid=${BG_PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  unset "BG_PID[$1]"
  return 0
}
bg_stop_all() { local n; for n in "${!BG_PID[@]}"; do bg_stop "$n"; done; }

# wait_output NAME REGEX TIMEOUT_S: a line of NAME's output matches.
wait_output() {
  local end=$(( $(date +%s) + $3 ))
  until grep -Eq -- "$2" "$(bg_out "$1")" 2>/dev/null; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    bg_alive "$1" || { grep -Eq -- "$2" "$(bg_out "$1")" 2>/dev/null; return; }
    sleep 0.2
  done
}

# flowgen_bg NAME ROLE SUBCOMMAND --listen IP:PORT [OPTS...]: start a
# flowgen server (tcp-server or udp-echo) and wait until it listens.
flowgen_bg() {
  local name=$1 role=$2
  shift 2
  bg_start "$name" "$role" "$FLOWGEN" "$@"
  wait_output "$name" '^listening on ' 20 \
    || fail "flowgen $1 in $role did not start: $(tail -n1 "$(bg_out "$name")")"
}

# bg_peers NAME: the distinct client addresses a flowgen server logged,
# space-separated ("" if none).
bg_peers() { sed -n 's/^peer //p' "$(bg_out "$1")" | sort -u | tr '\n' ' ' | sed 's/ $//'; }

# field KEY LINE: the value of KEY=VALUE in a flowgen summary line.
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1; }

# summary OUTPUT: the summary line (ok=...) of flowgen client output.
summary() { printf '%s\n' "$1" | grep -E '^ok=' | tail -n1; }

# bridge_up [PIH_CREATE ARGS...]: hosts ext, int and mgmt, the bridge
# created with ARGS and ready, all three vifs connected.
bridge_up() {
  local role
  net_hosts_up
  pih_create "$@"
  expect_log "$PIH_DOM" 'ready' 60
  for role in ext int mgmt; do wait_vif_connected "$role" 60; done
}

# nat_up [PIH_CREATE ARGS...]: hosts ext and int (plus any in NAT_ROLES),
# the bridge created with ARGS and ready, its ext and int vifs connected,
# and both hosts answered by the bridge's own address on their segment
# (which warms up the ARP caches without creating a translation).
nat_up() {
  local r
  need_flowgen
  net_hosts_up ext int ${NAT_ROLES:-}
  # A command to run once the hosts exist (e.g. irmin_start).
  [ -z "${NAT_BEFORE_CREATE:-}" ] || $NAT_BEFORE_CREATE
  pih_create "$@"
  expect_log "$PIH_DOM" 'ready' 60
  wait_vif_connected ext 60
  wait_vif_connected int 60
  for r in ext int ${NAT_ROLES:-}; do
    wait_ping "$r" "$(bridge_addr "$r")" 20 \
      || fail "$r: the bridge's address $(bridge_addr "$r") does not answer"
  done
}

# wait_ping ROLE ADDR TIMEOUT_S: until one ping from ROLE is answered
# (the first may be lost while the bridge resolves the next hop).
wait_ping() {
  local end=$(( $(date +%s) + $3 ))
  until ping_ok "$1" "$2"; do
    [ "$(date +%s)" -ge "$end" ] && return 1
  done
}

# through_bridge ROLE ADDR: ROLE reaches ADDR on the other segment (ping,
# retried for up to 20 s); fails with a reason that says so.
through_bridge() {
  wait_ping "$1" "$2" 20 \
    || fail "$1 ($(host_addr "$1")) cannot ping $2 through the bridge: no forwarding?"
}

# nat_counters: the bridge's last "nat: ... flows active ..." line, if any.
nat_counters() {
  tr -d '\r' < "$(console_log "$PIH_DOM")" 2>/dev/null | grep -E 'nat: .*flows active' | tail -n1
}

# tcp_counters ROLE: the TCP counters of ROLE's namespace that tell why
# connections failed (nonzero ones only), e.g. "OutRsts=3 ListenDrops=7".
tcp_counters() {
  host_exec "$1" cat /proc/net/snmp /proc/net/netstat 2>/dev/null | awk '
    $1 == "Tcp:" || $1 == "TcpExt:" {
      if (!($1 in names)) { names[$1] = $0; next }
      n = split(names[$1], k); split($0, v)
      for (i = 2; i <= n; i++)
        if (k[i] ~ /^(ActiveOpens|PassiveOpens|AttemptFails|EstabResets|RetransSegs|OutRsts|InErrs|ListenOverflows|ListenDrops|TCPAbortOn[A-Za-z]*|TCPTimeouts|SyncookiesSent|SyncookiesFailed|TCPBacklogDrop|TCPReqQFullDrop|TCPSynRetrans|TCPMemoryPressures)$/ && v[i] != 0)
          printf "%s=%s ", k[i], v[i]
    }' | sed 's/ $//'
}

# --- Irmin --------------------------------------------------------------
# The Irmin double (tools/irmin-graphql-double) in pih-mgmt, with its store
# in files under $IRMIN_ROOT (one directory per branch; every value a file
# under <branch>/tree/, every commit a line of <branch>/commits).
IRMIN=10.0.1.1:8081
IRMIN_ROOT=/tmp/irmin-store
IRMIN_RULES=$IRMIN_ROOT/main/tree/bridge/rules
BR_API=10.0.1.3:8080

# irmin_start [OPTS...]: start it in pih-mgmt (the namespace must exist) and
# wait until it listens; the store survives restarts.
irmin_start() {
  mkdir -p "$IRMIN_ROOT"
  bg_start irmin mgmt irmin-graphql-double --listen "$IRMIN" --root "$IRMIN_ROOT" "$@"
  wait_output irmin "^listening on " 20 \
    || fail "irmin-graphql-double did not start: $(tail -n2 "$(bg_out irmin)" | tr '\n' ' ')"
}
irmin_stop() { bg_stop irmin; }

# irmin_cmdline: the xl override giving the shipped command line irmin=.
irmin_cmdline() {
  local base
  base=$(sed -n 's/^cmdline *= *"\(.*\)"$/\1/p' "$PIH_CFG")
  [ -n "$base" ] || fail "no cmdline in $PIH_CFG"
  printf 'cmdline="%s irmin=%s"' "$base" "$IRMIN"
}

# pihctl_json ARGS...: pihctl --json against the bridge, from pih-mgmt.
pihctl_json() { host_exec mgmt pihctl --bridge "$BR_API" --json "$@"; }

# wait_flushed TIMEOUT_S: until the bridge's persistence backlog is 0.
wait_flushed() {
  local end=$(( $(date +%s) + $1 ))
  until [ "$(json_num backlog "$(pihctl_json health)")" = 0 ]; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 1
  done
}

# json_num KEY JSON / json_str KEY JSON: a top-level-ish field of a JSON
# answer (first match; enough for the bridge's flat answers).
json_num() { printf '%s\n' "$2" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" | head -n1; }
json_val() { printf '%s\n' "$2" | sed -n "s/.*\"$1\":\([a-z0-9]*\).*/\1/p" | head -n1; }
