#!/usr/bin/env bash
# Runs every cargo-fuzz target of the project for N seconds each (default 60).
# Needs the nightly toolchain; installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for dir in */fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    for target in $(cd "$dir" && cargo +nightly fuzz list); do
        echo "fuzz: $dir $target for ${secs}s"
        log="build/fuzz-${dir%/fuzz}-$target.log"
        mkdir -p build
        # A dictionary next to the target (fuzz/<target>.dict) and seed
        # inputs (fuzz/seeds/<target>/) help the structured formats.
        extra=()
        [ -f "$dir/$target.dict" ] && extra+=("-dict=$target.dict")
        corpus=()
        [ -d "$dir/seeds/$target" ] && corpus=("corpus/$target" "seeds/$target") && mkdir -p "$dir/corpus/$target"
        if (cd "$dir" && cargo +nightly fuzz run "$target" "${corpus[@]}" -- -max_total_time="$secs" "${extra[@]}") >"$log" 2>&1; then
            grep -E "^Done|DONE" "$log" | tail -1
        else
            echo "fuzz: $dir $target FAILED, see $log"; failed=1
        fi
    done
done
exit ${failed:-0}
