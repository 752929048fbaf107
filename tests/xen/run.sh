#!/usr/bin/env bash
# Xen-in-QEMU test harness, host side.
#
#   run.sh test [NAME...]   run scenarios (default: all) and report
#   run.sh run              boot Xen + dom0 + the bridge, interactive shell
#
# NAME is a dom0 scenario (tests/xen/scenarios/NAME.sh, run inside dom0 on
# real Xen) or a host scenario (tests/xen/host-scenarios/NAME.sh, run here).
# Prints one "PASS NAME" / "FAIL NAME: reason" line per scenario and the
# summary "xen-test: N passed, M failed"; exits non-zero if any failed.
#
# Environment:
#   KERNEL                the unikernel ELF (default <repo>/build/pih-bridge)
#   PIH_CACHE             package cache (default <repo>/.cache/xen-test)
#   PIH_BUILD_DIR         logs and initrds (default <repo>/build/xen-test);
#                         give parallel runs different ones
#   PIH_SCENARIO_TIMEOUT  per-scenario limit in dom0, seconds (default 120;
#                         a scenario may set its own: "# timeout: 240")
#   PIH_XEN_TIMEOUT       limit for the whole QEMU run, seconds (default:
#                         90 + (its limit + 10) per dom0 scenario)
#   PIH_QUIET=1           do not stream the serial console, only results
#   PIH_ALLOW_NO_KERNEL=1 boot dom0 even without a kernel (harness work)
#   PIH_VERBOSE=1         dom0 dumps every scenario's output and guest
#                         console, not only failing ones (in serial.log)
#   PIH_EXTRA_XEN, PIH_EXTRA_DOM0  more words for Xen's / dom0's command line
#   PIH_HOTPLUG=stock     use Debian's vif-bridge hotplug script in dom0
#                         instead of the lean one (tests/xen/dom0/)
# Output: build/xen-test/serial.log (whole console of the QEMU run),
#   build/xen-test/<name>.console.log for each failed scenario.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCEN_TIMEOUT=${PIH_SCENARIO_TIMEOUT:-120}
HOST_TIMEOUT=${PIH_HOST_TIMEOUT:-60}
SERIAL_LOG=$BUILD_DIR/serial.log
# dom0_max_vcpus=1: with two dom0 vCPUs, dom0 processes (xl, bash) die now
# and then of heap corruption under QEMU's emulation (5 of 110 xl creates;
# none in 70 with one vCPU). Xen and the guests still have both CPUs.
XEN_APPEND="console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all dom0_mem=512M,max:512M dom0_max_vcpus=1 ${PIH_EXTRA_XEN:-}"
DOM0_APPEND="console=hvc0 earlyprintk=xen rdinit=/init"

PASSED=0 FAILED=0
result() {  # PASS NAME | FAIL NAME REASON
  if [ "$1" = PASS ]; then
    PASSED=$((PASSED + 1)); echo "PASS $2"
  else
    FAILED=$((FAILED + 1)); echo "FAIL $2: $3"
  fi
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

build_assets() {  # MODE -> sets INITRD
  local kelf=$KERNEL
  if [ ! -f "$KERNEL" ]; then
    if [ "${PIH_ALLOW_NO_KERNEL:-0}" = 1 ]; then
      log "no kernel at $KERNEL: dom0 only (PIH_ALLOW_NO_KERNEL=1)"
      kelf=none
    else
      return 1
    fi
  fi
  "$XEN_TEST_DIR/fetch.sh" || die "fetch.sh failed"
  INITRD=$BUILD_DIR/initrd-$1.cpio.gz
  "$XEN_TEST_DIR/mkinitramfs.sh" "$kelf" "$INITRD" "$1" || die "mkinitramfs.sh failed"
}

qemu_cmd() {  # MODE EXTRA_DOM0_ARGS -> QEMU array
  local serial=(-serial stdio -monitor none)
  [ "$1" = run ] && serial=(-serial mon:stdio)
  # -initrd takes "file args" multiboot modules; a comma in args is ",,".
  local dom0_args="$DOM0_APPEND ${PIH_EXTRA_DOM0:-} pih.hotplug=${PIH_HOTPLUG:-fast} pih.verbose=${PIH_VERBOSE:-0} $2"
  QEMU=(qemu-system-x86_64 -machine pc -cpu max,-smap -smp 2 -m 1024
        -nographic "${serial[@]}" -no-reboot -net none
        -kernel "$XEN_IMG" -append "$XEN_APPEND"
        -initrd "$VMLINUZ ${dom0_args//,/,,},$INITRD")
}

run_host_scenario() {
  local name=$1 script=$XEN_TEST_DIR/host-scenarios/$1.sh rc reason
  local out=$BUILD_DIR/$name.host.out err=$BUILD_DIR/$name.host.err
  KERNEL=$KERNEL OUT_DIR=$BUILD_DIR REPO=$REPO \
    timeout -k 5 "$HOST_TIMEOUT" bash "$script" >"$out" 2>"$err" </dev/null
  rc=$?
  if [ $rc -eq 0 ]; then
    result PASS "$name"
  else
    if [ $rc -eq 124 ]; then reason="timeout after $HOST_TIMEOUT s"
    else
      reason=$(sed '/^[[:space:]]*$/d' "$err" | tail -n1)
      [ -n "$reason" ] || reason="exit status $rc"
    fi
    result FAIL "$name" "$reason"
    { echo "--- stdout ---"; cat "$out"; echo "--- stderr ---"; cat "$err"; } \
      > "$BUILD_DIR/$name.console.log"
    echo "  log: $BUILD_DIR/$name.console.log"
  fi
  rm -f "$out" "$err"
}

# Streams QEMU's serial console: to $SERIAL_LOG, to stdout (unless quiet),
# and notes when results arrive.
stream() {
  local t0=$1 line indump=0
  while IFS= read -r line || [ -n "$line" ]; do
    # Serial lines end in \r\n, dom0's often in \r\r\n.
    while [ "${line%$'\r'}" != "$line" ]; do line=${line%$'\r'}; done
    case "$line" in __QEMU_RC=*) echo "${line#__QEMU_RC=}" > "$BUILD_DIR/qemu.rc"; continue;; esac
    printf '%s\n' "$line" >> "$SERIAL_LOG"
    case "$line" in
      "===== BEGIN DUMP "*) indump=1 ;;
      "===== END DUMP "*) indump=0 ;;
    esac
    if [ "${PIH_QUIET:-0}" != 1 ]; then
      printf '%s\n' "$line"
    fi
    if [ $indump = 0 ]; then
      case "$line" in
        "METRIC "*)
          [ "${PIH_QUIET:-0}" = 1 ] && printf '%s\n' "$line"
          ;;
        "PASS "*|"FAIL "*)
          [ -s "$BUILD_DIR/first-result" ] || elapsed "$t0" "$(now)" > "$BUILD_DIR/first-result"
          [ "${PIH_QUIET:-0}" = 1 ] && printf '[+%ss] %s\n' "$(elapsed "$t0" "$(now)")" "$line"
          ;;
      esac
    fi
  done
}

run_dom0_scenarios() {
  local names=("$@") t_build t_qemu t_end rc total list n line
  t_build=$(now)
  if ! build_assets test; then
    for n in "${names[@]}"; do result FAIL "$n" "no kernel at $KERNEL (build it first)"; done
    return
  fi
  list=$(IFS=,; echo "${names[*]}")
  qemu_cmd test "pih.mode=test pih.tests=$list pih.timeout=$SCEN_TIMEOUT"
  # Overall limit: boot + each scenario's own limit ("# timeout: S" line).
  total=90
  for n in "${names[@]}"; do
    line=$(sed -n 's/^# *timeout: *\([0-9][0-9]*\).*/\1/p' "$XEN_TEST_DIR/scenarios/$n.sh" | head -n1)
    total=$((total + ${line:-$SCEN_TIMEOUT} + 10))
  done
  total=${PIH_XEN_TIMEOUT:-$total}
  : > "$SERIAL_LOG"; rm -f "$BUILD_DIR/qemu.rc" "$BUILD_DIR/first-result"
  t_qemu=$(now)
  log "assets ready in $(elapsed "$t_build" "$t_qemu") s; booting Xen in QEMU (limit $total s), console: $SERIAL_LOG"
  { timeout -k 5 "$total" "${QEMU[@]}" </dev/null 2>&1; echo "__QEMU_RC=$?"; } | stream "$t_qemu"
  t_end=$(now)
  rc=$(cat "$BUILD_DIR/qemu.rc" 2>/dev/null || echo '?')
  [ "$rc" = 124 ] && log "QEMU killed: overall timeout of $total s"
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || log "QEMU exited with status $rc"
  grep -q 'init: XEN-TEST-END' "$SERIAL_LOG" || log "dom0 did not finish its run (see $SERIAL_LOG)"

  # Results, ignoring anything inside failure dumps.
  local results
  results=$(awk '/^===== BEGIN DUMP /{d=1} /^===== END DUMP /{d=0; next}
                 !d && /^(PASS|FAIL) /' "$SERIAL_LOG")
  for n in "${names[@]}"; do
    line=$(grep -E -m1 "^(PASS $n\$|FAIL $n: )" <<<"$results")
    case "$line" in
      "PASS $n") result PASS "$n" ;;
      "FAIL $n: "*)
        result FAIL "$n" "${line#"FAIL $n: "}"
        awk -v n="$n" '$0 == "===== BEGIN DUMP " n " =====" {d=1}
                       d {print} $0 == "===== END DUMP " n " =====" {d=0}' \
          "$SERIAL_LOG" > "$BUILD_DIR/$n.console.log"
        echo "  log: $BUILD_DIR/$n.console.log (whole run: $SERIAL_LOG)"
        ;;
      *)
        result FAIL "$n" "no result (see $SERIAL_LOG)"
        cp "$SERIAL_LOG" "$BUILD_DIR/$n.console.log"
        ;;
    esac
  done
  log "timing: build $(elapsed "$t_build" "$t_qemu") s, QEMU $(elapsed "$t_qemu" "$t_end") s, first result at +$(cat "$BUILD_DIR/first-result" 2>/dev/null || echo '?') s"
}

cmd_test() {
  local host=() dom0=() n
  mkdir -p "$BUILD_DIR"
  rm -f "$BUILD_DIR"/*.console.log
  "$XEN_TEST_DIR/fetch.sh" --host-tools || die "cannot install the host tools"
  if [ $# -eq 0 ]; then
    for n in "$XEN_TEST_DIR"/host-scenarios/*.sh; do [ -e "$n" ] && host+=("$(basename "$n" .sh)"); done
    for n in "$XEN_TEST_DIR"/scenarios/*.sh; do [ -e "$n" ] && dom0+=("$(basename "$n" .sh)"); done
  else
    for n in "$@"; do
      if [ -f "$XEN_TEST_DIR/host-scenarios/$n.sh" ]; then host+=("$n")
      elif [ -f "$XEN_TEST_DIR/scenarios/$n.sh" ]; then dom0+=("$n")
      else result FAIL "$n" "no such scenario"
      fi
    done
  fi
  for n in "${host[@]}"; do run_host_scenario "$n"; done
  [ ${#dom0[@]} -gt 0 ] && run_dom0_scenarios "${dom0[@]}"
  echo "xen-test: $PASSED passed, $FAILED failed"
  [ $FAILED -eq 0 ] && [ $PASSED -gt 0 ]
}

cmd_run() {
  mkdir -p "$BUILD_DIR"
  build_assets run || die "no kernel at $KERNEL (build it first, or set KERNEL=)"
  qemu_cmd run "pih.mode=run"
  echo "Booting Xen + dom0 in QEMU; the bridge starts, then a dom0 shell."
  echo "Leave with 'poweroff -f' in dom0, or Ctrl-a x (QEMU)."
  exec "${QEMU[@]}"
}

case "${1:-}" in
  test) shift; cmd_test "$@" ;;
  run) shift; cmd_run "$@" ;;
  *) echo "usage: $0 test [NAME...] | run" >&2; exit 2 ;;
esac
