# Host-side settings shared by fetch.sh, mkinitramfs.sh and run.sh.
# Sourced, not executed.
XEN_TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$XEN_TEST_DIR/../.." && pwd)
PIH_CACHE=${PIH_CACHE:-$REPO/.cache/xen-test}
DEBS=$PIH_CACHE/debs          # downloaded .deb files
ROOTFS=$PIH_CACHE/rootfs      # every .deb unpacked with dpkg -x
XEN_IMG=$PIH_CACHE/xen        # gunzipped hypervisor (32-bit multiboot ELF)
VMLINUZ=$PIH_CACHE/vmlinuz    # dom0 kernel
KVER_FILE=$PIH_CACHE/kver     # dom0 kernel version, e.g. 6.1.0-57-amd64
XEN_VER=4.17
XEN_LIBEXEC=/usr/lib/xen-$XEN_VER/bin
BUILD_DIR=${PIH_BUILD_DIR:-$REPO/build/xen-test}   # logs, initrds
KERNEL=${KERNEL:-$REPO/build/pih-bridge}
# Host-built test tools (`make tools`: flowgen); every file here goes into
# dom0's /usr/local/bin.
TOOLS_DIR=${PIH_TOOLS_DIR:-$REPO/build/tools}

# cache_lock: serialise writers of $PIH_CACHE (parallel runs).
cache_lock() {
  mkdir -p "$PIH_CACHE"
  exec 9>"$PIH_CACHE/.lock"
  flock 9
}

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# Binaries (paths inside $ROOTFS) that go into the dom0 initramfs; their
# shared libraries are found by following readelf -d NEEDED entries.
DOM0_BINS=(
  bin/busybox bin/bash bin/ip sbin/bridge sbin/tc sbin/brctl
  usr/bin/flock bin/ping
  usr/bin/xenstore
  "${XEN_LIBEXEC#/}/xl" "${XEN_LIBEXEC#/}/xenstored"
  "${XEN_LIBEXEC#/}/xenconsoled" "${XEN_LIBEXEC#/}/xenconsole"
  "${XEN_LIBEXEC#/}/xen-init-dom0" "${XEN_LIBEXEC#/}/libxl-save-helper"
  "${XEN_LIBEXEC#/}/xenstore-control" "${XEN_LIBEXEC#/}/xentop"
  "${XEN_LIBEXEC#/}/lsevtchn" "${XEN_LIBEXEC#/}/xen-diag"
  # dlopen'ed, not NEEDED: glibc loads it for pthread_cancel; xl aborts
  # ("libgcc_s.so.1 must be installed") without it.
  lib/x86_64-linux-gnu/libgcc_s.so.1
)
# dom0 kernel modules, loaded in this order (dependencies are added in front
# automatically from each module's .modinfo "depends=").
DOM0_MODULES=(
  xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-netback
  llc stp bridge veth tun
)

LIBDIRS=(lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib64 lib usr/lib
         "usr/lib/xen-$XEN_VER/lib")
find_lib() {  # SONAME -> path in $ROOTFS
  local d
  for d in "${LIBDIRS[@]}"; do
    [ -e "$ROOTFS/$d/$1" ] && { echo "$ROOTFS/$d/$1"; return 0; }
  done
  return 1
}

# in_root PATH: follow symlinks of a file under $ROOTFS, treating absolute
# link targets as relative to $ROOTFS (readlink -f would escape to the host).
in_root() {
  local f=$1 t n=0
  while [ -L "$f" ] && [ $n -lt 20 ]; do
    t=$(readlink "$f")
    case "$t" in /*) f=$ROOTFS$t;; *) f=$(dirname "$f")/$t;; esac
    n=$((n + 1))
  done
  echo "$f"
}

# elf_closure BIN...: prints every file (absolute host paths, symlinks as
# found) that the given binaries need, the binaries included. Missing
# libraries are printed as "MISSING <lib> <needed-by>".
elf_closure() {
  local queue=() seen=" " f real lib p
  for f in "$@"; do queue+=("$ROOTFS/${f#/}"); done
  queue+=("$ROOTFS/lib64/ld-linux-x86-64.so.2")
  while [ ${#queue[@]} -gt 0 ]; do
    f=${queue[0]}; queue=("${queue[@]:1}")
    if [ ! -e "$f" ]; then echo "MISSING ${f#"$ROOTFS"} -"; continue; fi
    real=$(in_root "$f")
    case "$seen" in *" $f "*) continue;; esac
    seen+="$f "
    echo "$f"
    [ "$real" != "$f" ] && echo "$real"
    head -c4 "$real" | grep -q ELF || continue
    while read -r lib; do
      if p=$(find_lib "$lib"); then queue+=("$p")
      else echo "MISSING $lib ${real#"$ROOTFS"}"; fi
    done < <(readelf -d "$real" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done
}
