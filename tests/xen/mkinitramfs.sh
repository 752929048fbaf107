#!/usr/bin/env bash
# mkinitramfs.sh KERNEL_ELF OUT.cpio.gz [MODE]
#
# Builds the dom0 initramfs for the Xen-in-QEMU harness from the staging
# root that fetch.sh prepared. Two concatenated gzip'd cpio archives (Linux
# unpacks both):
#   base     busybox, bash, iproute2, Xen tools, libraries, kernel modules;
#            cached in $PIH_CACHE, rebuilt only when the packages or this
#            script change.
#   overlay  /init, the scenarios, /pih/pih-bridge (KERNEL_ELF),
#            /pih/pih-bridge.xl and the host-built test tools of
#            $TOOLS_DIR (build/tools: flowgen) in /usr/local/bin; rebuilt
#            every time (fast).
# MODE (test|run, default test) is the default for pih.mode= when the dom0
# kernel command line has none.
# KERNEL_ELF may be "none" (harness development only): then /pih has only
# the .xl file.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 2 ] || die "usage: mkinitramfs.sh KERNEL_ELF OUT.cpio.gz [test|run]"
KELF=$1 OUT=$2 MODE=${3:-test}
case "$MODE" in test|run) ;; *) die "MODE must be test or run, not '$MODE'";; esac
[ "$KELF" = none ] || [ -f "$KELF" ] || die "kernel ELF not found: $KELF"
[ -f "$PIH_CACHE/stamp" ] && [ -d "$ROOTFS" ] || die "run tests/xen/fetch.sh first"
XL_CFG=$REPO/xl/pih-bridge.xl
[ -f "$XL_CFG" ] || die "missing $XL_CFG"
KVER=$(cat "$KVER_FILE")

BASE=$PIH_CACHE/initramfs-base.cpio.gz
BASE_KEY=$( { cat "$PIH_CACHE/stamp" "$0" "$XEN_TEST_DIR/common.sh"; } | sha256sum | cut -d' ' -f1)

mkcpio() {  # DIR OUT: gzip'd newc archive of DIR's contents, owned by root
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) \
    | gzip -6 > "$2"
}

# Module name -> .ko path (names use - and _ interchangeably).
ko_path() {
  local n=$1 alt
  alt=$(echo "$n" | tr '_-' '-_')
  find "$ROOTFS/lib/modules/$KVER/kernel" \( -name "$n.ko" -o -name "$alt.ko" \) -print -quit
}
ko_depends() {  # .ko -> its dependencies, one a line
  tr '\0' '\n' < "$1" | sed -n 's/^depends=//p' | head -n1 | tr ',' '\n' | sed '/^$/d'
}
MODS_SEEN=" "
MODS_ORDER=()
add_module() {
  local n=$1 ko d
  case "$MODS_SEEN" in *" $n "*) return 0;; esac
  ko=$(ko_path "$n")
  [ -n "$ko" ] || die "kernel module $n not found in $KVER"
  MODS_SEEN+="$n $(basename "$ko" .ko) "
  while read -r d; do add_module "$d"; done < <(ko_depends "$ko")
  MODS_ORDER+=("$ko")
}

build_base() {
  local stage=$PIH_CACHE/initramfs-base.d f rel name d have
  rm -rf "$stage"; mkdir -p "$stage"
  # Merged /usr, as on an installed Debian: /bin/ping and /usr/bin/ping
  # are the same file, whichever path a script uses.
  mkdir -p "$stage/usr/bin" "$stage/usr/sbin" "$stage/usr/lib" "$stage/usr/lib64"
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$stage/$d"; done
  # Directory skeleton.
  for d in etc/pih proc sys dev run tmp \
           root var/lib/xen var/lib/xenstored var/log/xen/console \
           "${XEN_LIBEXEC#/}" pih tests/scenarios; do
    mkdir -p "$stage/$d"
  done
  ln -s ../run "$stage/var/run"
  chmod 1777 "$stage/tmp"
  mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || log "warning: cannot mknod dev/console (not root?)"
  mknod -m 666 "$stage/dev/null" c 1 3 2>/dev/null || true

  # Binaries and the libraries they need (symlinks kept as symlinks).
  local files
  files=$(elf_closure "${DOM0_BINS[@]}" sbin/ip | sort -u)
  if grep -q '^MISSING ' <<<"$files"; then
    grep '^MISSING ' <<<"$files" >&2; die "missing libraries: run fetch.sh"
  fi
  while read -r f; do
    rel=${f#"$ROOTFS"/}
    (cd "$ROOTFS" && cp -a --parents "$rel" "$stage")
  done <<<"$files"
  # xenstore-read, -write, ... are hard links of one multi-call binary.
  (cd "$ROOTFS" && cp -a --parents usr/bin/xenstore-* "$stage")
  # Hotplug scripts and xl.conf.
  (cd "$ROOTFS" && cp -a --parents etc/xen "$stage")
  # A few terminfo entries so interactive bash/xentop behave.
  for f in l/linux v/vt100 v/vt102 v/vt220 x/xterm x/xterm-256color d/dumb; do
    [ -e "$ROOTFS/lib/terminfo/$f" ] && (cd "$ROOTFS" && cp -a --parents "lib/terminfo/$f" "$stage")
  done
  ln -sf bash "$stage/bin/sh"

  # busybox applets for everything that has no real binary.
  while read -r rel; do
    name=${rel##*/}
    case "$name" in init|linuxrc|sh|busybox) continue;; esac
    have=0
    for d in bin sbin usr/bin usr/sbin "${XEN_LIBEXEC#/}"; do
      [ -e "$stage/$d/$name" ] || [ -L "$stage/$d/$name" ] && { have=1; break; }
    done
    [ $have = 1 ] && continue
    mkdir -p "$stage/$(dirname "$rel")"
    ln -s /bin/busybox "$stage/$rel"
  done < <("$ROOTFS/bin/busybox" --list-full)

  # Kernel modules, dependencies first.
  local m
  for m in "${DOM0_MODULES[@]}"; do add_module "$m"; done
  : > "$stage/etc/pih/modules"
  for f in "${MODS_ORDER[@]}"; do
    rel=${f#"$ROOTFS"/}
    (cd "$ROOTFS" && cp -a --parents "$rel" "$stage")
    echo "/$rel" >> "$stage/etc/pih/modules"
  done

  printf 'root:x:0:0:root:/root:/bin/bash\n' > "$stage/etc/passwd"
  printf 'root:x:0:\n' > "$stage/etc/group"
  echo dom0 > "$stage/etc/hostname"

  # Names of the files in the base, so tools in the overlay can be checked
  # for libraries the base lacks.
  find "$stage" \( -type f -o -type l \) -printf '%f\n' | sort -u > "$BASE.names"
  mkcpio "$stage" "$BASE.tmp"
  mv "$BASE.tmp" "$BASE"
  echo "$BASE_KEY" > "$BASE.key"
  rm -rf "$stage"
}

build_overlay() {
  local stage=$1
  mkdir -p "$stage/pih" "$stage/tests/scenarios" "$stage/etc/pih"
  install -m 755 "$XEN_TEST_DIR/dom0/init" "$stage/init"
  install -m 755 "$XEN_TEST_DIR/dom0/runner.sh" "$stage/tests/runner.sh"
  # Helper libraries for scenarios: lib.sh (always sourced), netlib.sh...
  local l
  for l in "$XEN_TEST_DIR"/*lib.sh; do
    install -m 644 "$l" "$stage/tests/"
  done
  install -m 644 "$XEN_TEST_DIR/dom0/motd" "$stage/etc/motd"
  install -m 755 "$XEN_TEST_DIR/dom0/vif-bridge-fast" "$stage/etc/pih/vif-bridge-fast"
  local s
  for s in "$XEN_TEST_DIR"/scenarios/*.sh; do
    [ -e "$s" ] && install -m 755 "$s" "$stage/tests/scenarios/"
  done
  if [ "$KELF" != none ]; then
    install -m 755 "$KELF" "$stage/pih/pih-bridge"
  fi
  install_tools "$stage"
  # The shipped config, with the kernel path of this initramfs.
  sed 's|^\([[:space:]]*kernel[[:space:]]*=\).*$|\1 "/pih/pih-bridge"|' "$XL_CFG" > "$stage/pih/pih-bridge.xl"
  grep -q '^kernel = "/pih/pih-bridge"$' "$stage/pih/pih-bridge.xl" \
    || die "could not rewrite kernel= in $XL_CFG"
  echo "$MODE" > "$stage/etc/pih/mode"
  mkdir -p "$stage/root"
  cat > "$stage/root/.bash_profile" <<'EOP'
PS1='dom0:\w# '
alias ll='ls -l'
EOP
}

# install_tools STAGE: every file of $TOOLS_DIR into /usr/local/bin, after
# checking that the base has each shared library it needs (the tools are
# built on the host against Debian 12's glibc, which dom0 also has).
install_tools() {
  local stage=$1 t lib n=0
  if [ ! -d "$TOOLS_DIR" ]; then
    log "warning: no $TOOLS_DIR (make tools): scenarios that need flowgen will fail"
    return 0
  fi
  mkdir -p "$stage/usr/local/bin"
  for t in "$TOOLS_DIR"/*; do
    [ -f "$t" ] || continue
    while read -r lib; do
      grep -qxF "$lib" "$BASE.names" \
        || die "tool ${t##*/} needs $lib, which the dom0 base lacks (add it to DOM0_BINS in common.sh)"
    done < <(readelf -d "$t" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    install -m 755 "$t" "$stage/usr/local/bin/"
    n=$((n + 1))
  done
  [ -x "$TOOLS_DIR/flowgen" ] || log "warning: no $TOOLS_DIR/flowgen (make tools): scenarios that need it will fail"
  log "tools: $n from $TOOLS_DIR"
}

main() {
  cache_lock
  if [ ! -f "$BASE" ] || [ ! -f "$BASE.names" ] \
     || [ "$(cat "$BASE.key" 2>/dev/null)" != "$BASE_KEY" ]; then
    log "building base initramfs"
    build_base
  fi
  # global: the EXIT trap needs it
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/pih-overlay.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/root"
  build_overlay "$tmp/root"
  mkcpio "$tmp/root" "$tmp/overlay.cpio.gz"
  mkdir -p "$(dirname "$OUT")"
  cat "$BASE" "$tmp/overlay.cpio.gz" > "$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
  flock -u 9
  log "wrote $OUT ($(du -h "$OUT" | cut -f1), mode $MODE)"
}

main
