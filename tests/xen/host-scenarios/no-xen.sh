# Host scenario: boot the kernel ELF directly under QEMU, without Xen (no
# Xen CPUID leaves). The kernel must say so on the debug console (port
# 0xe9) and halt; we stop QEMU once the line is there.
# Environment from run.sh: KERNEL, OUT_DIR.
set -u
re='xen.*not (detected|present|found)'
limit=30
[ -f "$KERNEL" ] || { echo "no kernel at $KERNEL (build it first)" >&2; exit 1; }
out=$OUT_DIR/no-xen.debugcon.log
rm -f "$out"
qemu-system-x86_64 -machine pc -cpu max -m 64 -nographic -no-reboot \
  -kernel "$KERNEL" -debugcon "file:$out" -display none -serial none \
  -monitor none </dev/null &
pid=$!
stop() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
found() { [ -f "$out" ] && tr -d '\r' < "$out" | grep -Eiq "$re"; }
end=$((SECONDS + limit))
while :; do
  if found; then
    stop; echo "debug console:"; cat "$out"; exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"; rc=$?
    found && { echo "debug console:"; cat "$out"; exit 0; }
    echo "--- debug console ($out) ---"; cat "$out" 2>/dev/null
    echo "QEMU exited (status $rc) without a line matching '$re'" >&2
    exit 1
  fi
  if [ $SECONDS -ge $end ]; then
    stop
    echo "--- debug console ($out) ---"; cat "$out" 2>/dev/null
    echo "no line matching '$re' within $limit s" >&2
    exit 1
  fi
  sleep 0.2
done
