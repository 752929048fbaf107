# Helpers for dom0 scenarios (tests/xen/scenarios/<name>.sh). The runner
# sources this file before the scenario; scenarios run under bash in dom0.
#
# A scenario passes by exiting 0. It fails by exiting non-zero; the last
# line it wrote to stderr is the reason the runner reports. Use `fail`.

PIH_DOM=${PIH_DOM:-pih-bridge}                 # the guest's domain name
PIH_CFG=${PIH_CFG:-/pih/pih-bridge.xl}         # its xl config in dom0
CONSOLE_DIR=/var/log/xen/console                 # xenconsoled --log-dir

# Seconds since dom0 boot, e.g. 12.34.
ts() { cut -d' ' -f1 /proc/uptime; }

# note MSG...: progress line with a timestamp (stdout; shown on failure).
note() { printf '[%8s] %s\n' "$(ts)" "$*"; }

# fail REASON: end the scenario as failed.
fail() { printf '%s\n' "$*" >&2; exit 1; }

# console_log NAME: path of the guest console log written by xenconsoled.
console_log() { echo "$CONSOLE_DIR/guest-$1.log"; }

# log_mark NAME: later wait_for_log/expect_log calls look only at lines
# NAME's console log gets from now on (xenconsoled appends across
# xl destroy / xl create of the same name).
LOG_SKIP=0
log_mark() {
  local f
  f=$(console_log "$1")
  LOG_SKIP=$( [ -f "$f" ] && wc -l < "$f" || echo 0)
}

# wait_for_log NAME REGEX TIMEOUT_S: wait until a line of NAME's console
# log (after log_mark's mark) matches the extended regex. Returns 1 on
# timeout.
wait_for_log() {
  local f end
  f=$(console_log "$1")
  end=$(( $(date +%s) + $3 ))
  while :; do
    [ -f "$f" ] && tail -n "+$((LOG_SKIP + 1))" "$f" | tr -d '\r' | grep -Eq -- "$2" && return 0
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.2
  done
}

# expect_log NAME REGEX TIMEOUT_S: wait_for_log, or fail naming the regex.
expect_log() {
  wait_for_log "$@" || fail "no console line matching '$2' within $3 s"
}

# log_has NAME REGEX: the console log has such a line now (no waiting).
log_has() {
  local f; f=$(console_log "$1")
  [ -f "$f" ] && tr -d '\r' < "$f" | grep -Eq -- "$2"
}

# domain_exists NAME
domain_exists() { xl domid "$1" >/dev/null 2>&1; }

# domain_state NAME: the state column of xl list (e.g. "-b----").
domain_state() { xl list "$1" 2>/dev/null | awk 'NR == 2 { print $5 }'; }

# wait_domain_gone NAME TIMEOUT_S: returns 1 if it still exists then.
wait_domain_gone() {
  local end=$(( $(date +%s) + $2 ))
  while domain_exists "$1"; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.2
  done
  return 0
}

# destroy_domain NAME: xl destroy if it exists, and wait until it is gone.
destroy_domain() {
  domain_exists "$1" || return 0
  xl destroy "$1" >/dev/null 2>&1
  wait_domain_gone "$1" 10
}

# pih_create [KEY=VALUE...]: xl create the shipped config (with optional
# overrides, as xl accepts them after the file) and fail if xl fails.
pih_create() {
  local out
  note "xl create $PIH_CFG $*"
  out=$(xl create "$PIH_CFG" "$@" 2>&1) || {
    printf '%s\n' "$out"
    fail "xl create failed: $(printf '%s\n' "$out" | grep -v '^$' | tail -n1)"
  }
  printf '%s\n' "$out"
  note "created $PIH_DOM (domid $(xl domid "$PIH_DOM" 2>/dev/null))"
}

# wait_domain_down NAME TIMEOUT_S: wait until the guest has shut itself
# down: gone, or in xl's shutdown state ("s") waiting for the toolstack to
# destroy it (under emulation dom0's teardown of the vifs alone can take
# several seconds). Returns 1 on timeout.
wait_domain_down() {
  local end=$(( $(date +%s) + $2 ))
  while domain_exists "$1"; do
    case "$(domain_state "$1")" in *s*) return 0;; esac
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.2
  done
  return 0
}

# shutdown_reason NAME: the reason xl's domain watcher logged for the last
# shutdown of NAME: poweroff, reboot, suspend, crash, watchdog, soft_reset,
# or nothing if none yet.
shutdown_reason() {
  local code
  code=$(sed -n 's/.*has shut down, reason code \([0-9]*\).*/\1/p' \
         "/var/log/xen/xl-$1.log" 2>/dev/null | tail -n1)
  case "$code" in
    0) echo poweroff;; 1) echo reboot;; 2) echo suspend;; 3) echo crash;;
    4) echo watchdog;; 5) echo soft_reset;; "") ;; *) echo "code-$code";;
  esac
}

# wait_shutdown_reason NAME TIMEOUT_S: wait until xl logged a reason.
wait_shutdown_reason() {
  local end=$(( $(date +%s) + $2 ))
  while [ -z "$(shutdown_reason "$1")" ]; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.2
  done
}
