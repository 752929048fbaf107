#!/usr/bin/env bash
# Fetch the Debian packages for the Xen-in-QEMU test harness, unpack them
# into a staging root ($PIH_CACHE/rootfs) and prepare the boot assets:
#   $PIH_CACHE/xen      the hypervisor, gunzipped (QEMU -kernel wants an ELF)
#   $PIH_CACHE/vmlinuz  the dom0 kernel
# Idempotent: a stamp keyed on the package list makes a cached run ~instant.
# Installs the host tools it needs (qemu-system-x86, cpio, binutils) when
# missing; `fetch.sh --host-tools` does only that.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Bump when the unpack/prepare steps change, to invalidate old caches.
FETCH_FORMAT=1

# Xen hypervisor + toolstack and its libraries.
PKGS_XEN=(
  xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils
  libxencall1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenmisc4.17
  libxenstore4 libxentoollog1 libxenhypfs1 libxendevicemodel1 libxentoolcore1
  libyajl2 libext2fs2 liblzma5 libuuid1 libzstd1 zlib1g libncurses6 libtinfo6
  libc6 libgcc-s1 libcom-err2
)
# dom0 userland: busybox for everything small, bash + iproute2 for the
# hotplug scripts and the scenarios, util-linux for flock (busybox has no
# flock applet), iputils-ping for flood pings (busybox ping has no -f).
PKGS_USER=(
  busybox-static bash iproute2 bridge-utils libmnl0 libelf1 libbpf1 libcap2
  libxtables12 libbsd0 libmd0 libdb5.3 libselinux1 libpcre2-8-0
  util-linux ncurses-base iputils-ping libidn2-0 libunistring2
)

# Host tools this harness needs: command -> Debian package.
declare -A HOST_TOOLS=(
  [qemu-system-x86_64]=qemu-system-x86 [cpio]=cpio [readelf]=binutils
  [gzip]=gzip [timeout]=coreutils [dpkg]=dpkg [apt-get]=apt [flock]=util-linux
)

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >&2 || true
    APT_UPDATED=1
  fi
}

ensure_host_tools() {
  local missing=() cmd
  for cmd in "${!HOST_TOOLS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${HOST_TOOLS[$cmd]}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing host packages: ${missing[*]}"
  [ "$(id -u)" = 0 ] || die "need root to install: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${missing[@]}" >&2; then
    apt_update_once
    apt-get install -y -qq "${missing[@]}" >&2 || die "cannot install ${missing[*]}"
  fi
}

# linux-image-amd64 depends on linux-image-<version>-amd64: resolve it.
resolve_kernel_pkg() {
  local pkg
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
  if [ -z "$pkg" ]; then
    apt_update_once
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
          | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
  fi
  if [ -z "$pkg" ] && [ -s "$KVER_FILE" ]; then
    pkg=linux-image-$(cat "$KVER_FILE")   # offline: keep what we have
    log "cannot resolve linux-image-amd64; using cached $pkg"
  fi
  [ -n "$pkg" ] || die "cannot resolve the kernel package from linux-image-amd64"
  echo "$pkg"
}

have_deb() { compgen -G "$DEBS/${1}_*.deb" >/dev/null; }

download() {
  local want=() p
  for p in "$@"; do have_deb "$p" || want+=("$p"); done
  [ ${#want[@]} -eq 0 ] && return 0
  log "downloading ${#want[@]} package(s): ${want[*]}"
  mkdir -p "$DEBS"
  # apt-get download runs as the _apt user when it can: the target
  # directory must be writable by it, otherwise it warns and uses root.
  if ! (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "${want[@]}" >&2); then
    apt_update_once
    (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "${want[@]}" >&2) \
      || die "apt-get download failed for: ${want[*]}"
  fi
  for p in "${want[@]}"; do have_deb "$p" || die "package $p was not downloaded"; done
}

# Every shared library that the dom0 binaries need must be in the rootfs.
# Prints the missing ones (with who needs them) and fails.
check_libs() {
  local missing
  missing=$(elf_closure "${DOM0_BINS[@]}" | sed -n 's/^MISSING \(.*\) \(.*\)$/  \1 (needed by \2)/p' | sort -u)
  if [ -n "$missing" ]; then
    printf '%s: missing in %s:\n%s\n' "${0##*/}" "$ROOTFS" "$missing" >&2
    die "add the Debian packages that ship them to fetch.sh"
  fi
}

main() {
  ensure_host_tools
  [ "${1:-}" = --host-tools ] && return 0
  cache_lock
  local kpkg kver pkgs key stamp=$PIH_CACHE/stamp
  kpkg=$(resolve_kernel_pkg)
  kver=${kpkg#linux-image-}
  pkgs=("${PKGS_XEN[@]}" "${PKGS_USER[@]}" "$kpkg")
  key=$(printf '%s\n' "format=$FETCH_FORMAT" "${pkgs[@]}" | sort | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] \
     && [ -s "$XEN_IMG" ] && [ -s "$VMLINUZ" ] && [ -d "$ROOTFS" ]; then
    log "cached ($PIH_CACHE, kernel $kver)"
    return 0
  fi
  download "${pkgs[@]}"
  log "unpacking into $ROOTFS"
  rm -rf "$ROOTFS" "$stamp"
  mkdir -p "$ROOTFS"
  local p deb
  for p in "${pkgs[@]}"; do
    # Newest version if several are cached.
    deb=$(ls -1 "$DEBS/${p}"_*.deb | sort -V | tail -n1)
    dpkg -x "$deb" "$ROOTFS"
  done
  [ -f "$ROOTFS/boot/xen-$XEN_VER-amd64.gz" ] || die "no /boot/xen-$XEN_VER-amd64.gz in the hypervisor package"
  [ -f "$ROOTFS/boot/vmlinuz-$kver" ] || die "no /boot/vmlinuz-$kver in $kpkg"
  gunzip -c "$ROOTFS/boot/xen-$XEN_VER-amd64.gz" > "$XEN_IMG.tmp" && mv "$XEN_IMG.tmp" "$XEN_IMG"
  cp "$ROOTFS/boot/vmlinuz-$kver" "$VMLINUZ"
  echo "$kver" > "$KVER_FILE"
  check_libs
  echo "$key" > "$stamp"
  log "ready: xen $(du -h "$XEN_IMG" | cut -f1), vmlinuz $(du -h "$VMLINUZ" | cut -f1), kernel $kver"
}

main "$@"
