#!/usr/bin/env bash
# Installs what building and testing pih-bridge needs on a Debian machine
# with rustup. Idempotent: quick when nothing is missing.
set -euo pipefail

need_debs=(qemu-system-x86 cpio xz-utils binutils)
need_components=(rust-src)

say() { printf 'setup: %s\n' "$*"; }

if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
    say "cargo and rustup are required (https://rustup.rs); aborting" >&2
    exit 1
fi

installed_components=$(rustup component list --installed 2>/dev/null || true)
for c in "${need_components[@]}"; do
    if ! grep -q "^$c" <<<"$installed_components"; then
        say "rustup component add $c"
        rustup component add "$c"
    fi
done

missing=()
for p in "${need_debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    say "apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
