#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS (default 60) from its seed
# corpus, with the YAML dictionary for the YAML targets; fails on the first
# crash, timeout or out-of-memory. New inputs go to a temporary corpus, so
# the seeds in corpus/ are only read. Used by .ci/run; needs cargo-fuzz
# (`cargo install cargo-fuzz`). cargo-fuzz needs nightly-only flags, which
# the stable toolchain accepts with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $(cargo fuzz list); do
  extra=()
  case "$target" in
    experiment|coordinator_policy|agent_policy|gameday) extra=(-dict=dict/yaml.dict) ;;
  esac
  mkdir -p "$work/$target"
  echo "-- $target: ${seconds}s"
  cargo fuzz run -O "$target" "$work/$target" "corpus/$target" -- \
    "${extra[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$work/" -print_final_stats=1 2>&1 | grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^==[0-9]+== ?ERROR|^SUMMARY|Test unit written" || true
  if ls "$work"/crash-* "$work"/timeout-* "$work"/oom-* >/dev/null 2>&1; then
    echo "fuzz target $target found a failing input:"; ls "$work"/crash-* "$work"/timeout-* "$work"/oom-* 2>/dev/null
    exit 1
  fi
done
