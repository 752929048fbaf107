#!/bin/bash
# Runs dom0 scenarios: runner.sh [NAME...] (default: all, sorted).
# Prints exactly one line per scenario on stdout (the console):
#   PASS <name>        or        FAIL <name>: <reason>
# and, after a FAIL (after every scenario if PIH_VERBOSE=1), a dump of the
# scenario's output, guest consoles, xl dmesg... between
# "===== BEGIN DUMP <name> =====" and "===== END DUMP <name> =====".
. /tests/lib.sh
TIMEOUT=${PIH_SCENARIO_TIMEOUT:-120}
SCEN_DIR=/tests/scenarios

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in "$SCEN_DIR"/*.sh; do [ -e "$f" ] && names+=("$(basename "$f" .sh)"); done
fi

# run_with_timeout SECS OUT ERR CMD...: runs CMD in its own session so a
# timeout can kill everything it started. Returns CMD's status, or 124.
run_with_timeout() {
  local secs=$1 out=$2 err=$3 pid wd rc flag
  shift 3
  flag=$(mktemp)
  rm -f "$flag"
  setsid "$@" >"$out" 2>"$err" </dev/null &
  pid=$!
  ( sleep "$secs"; touch "$flag"; kill -TERM -- -"$pid" 2>/dev/null
    sleep 3; kill -KILL -- -"$pid" 2>/dev/null ) &
  wd=$!
  wait "$pid"; rc=$?
  kill "$wd" 2>/dev/null; wait "$wd" 2>/dev/null
  if [ -e "$flag" ]; then rm -f "$flag"; return 124; fi
  return "$rc"
}

dump() {  # NAME OUT ERR
  local f
  echo "===== BEGIN DUMP $1 ====="
  echo "--- scenario stdout ---"; cat "$2"
  echo "--- scenario stderr ---"; cat "$3"
  for f in "$CONSOLE_DIR"/guest-*.log; do
    [ -e "$f" ] || continue
    echo "--- guest console $f ---"; tail -c 65536 "$f" | tr -d '\r'
  done
  echo "--- xl list ---"; xl list 2>&1
  echo "--- xl dmesg | tail -n 60 ---"; xl dmesg 2>&1 | tail -n 60
  for f in /var/log/xen/xl-*.log; do
    [ -e "$f" ] || continue
    echo "--- $f (tail) ---"; tail -n 30 "$f"
  done
  echo "--- syslog (tail) ---"; tail -n 30 /var/log/messages 2>/dev/null
  echo "--- dom0 dmesg (tail) ---"; dmesg | tail -n 30
  echo "===== END DUMP $1 ====="
}

# guest_faults: what went wrong with guests during the scenario that the
# scenario may not have seen: a triple fault (Xen then reboots the domain
# and xl's on_reboot="restart" brings it back quietly) or a crash.
guest_faults() {
  local f
  f=$(xl dmesg 2>/dev/null | grep -Eo 'd[0-9]+v[0-9]+ Triple fault' | head -n1)
  [ -n "$f" ] && { echo "guest triple-faulted ($f, see xl dmesg)"; return; }
  grep -qs 'has shut down, reason code 3 ' /var/log/xen/xl-*.log \
    && echo "guest crashed (xl log: reason code 3)"
}

cleanup() {
  local d
  for d in "$PIH_DOM" $(xl list 2>/dev/null | awk 'NR > 2 { print $1 }'); do
    destroy_domain "$d" || echo "runner: cannot destroy $d" >&2
  done
  rm -f "$CONSOLE_DIR"/guest-*.log /var/log/xen/xl-*.log
  xl dmesg -c >/dev/null 2>&1   # so guest_faults sees this scenario only
  # Test hosts of the previous scenario (their veths go with them).
  for d in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
    ip netns del "$d" 2>/dev/null
  done
}

for name in "${names[@]}"; do
  script=$SCEN_DIR/$name.sh
  if [ ! -f "$script" ]; then
    echo "FAIL $name: no such scenario"
    continue
  fi
  cleanup
  out=/tmp/scenario-$name.out err=/tmp/scenario-$name.err
  # A scenario may ask for another limit with a line "# timeout: SECONDS".
  limit=$(sed -n 's/^# *timeout: *\([0-9][0-9]*\).*/\1/p' "$script" | head -n1)
  limit=${limit:-$TIMEOUT}
  run_with_timeout "$limit" "$out" "$err" \
    bash -c 'source /tests/lib.sh && source "$1"' "scenario-$name" "$script"
  rc=$?
  # Unless the scenario says "# allow: crash", a guest fault fails it.
  faults=
  grep -q '^# *allow: *crash' "$script" || faults=$(guest_faults)
  if [ $rc -eq 0 ] && [ -n "$faults" ]; then
    rc=1; echo "$faults" >> "$err"
  fi
  # Figures a scenario measured ("METRIC <name> <value>" on its stdout).
  tr -d '\r' < "$out" | grep -E '^METRIC ' | sed "s/^METRIC /METRIC $name /"
  if [ $rc -eq 0 ]; then
    echo "PASS $name"
    [ "${PIH_VERBOSE:-0}" = 1 ] && dump "$name" "$out" "$err"
  else
    if [ $rc -eq 124 ]; then
      reason="timeout after ${limit} s"
    else
      reason=$(tr -d '\r' < "$err" | sed '/^[[:space:]]*$/d' | tail -n1)
      [ -n "$reason" ] || reason="exit status $rc"
    fi
    case "$reason" in "$faults") ;; *) [ -n "$faults" ] && reason="$reason [$faults]" ;; esac
    echo "FAIL $name: $reason"
    dump "$name" "$out" "$err"
  fi
done
cleanup
