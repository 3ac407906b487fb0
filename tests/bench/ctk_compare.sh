#!/usr/bin/env bash
# faultline vs Chaos Toolkit, side by side in one run (see ctk_compare.py).
# Makes its own virtual environment with chaostoolkit from PyPI, by default
# in target/ctk-venv of the repository (CTK_VENV overrides it; a relative
# CTK_VENV is taken from the directory the script was started in).
#
#   tests/bench/ctk_compare.sh [N ...]      # default: 100 1000 probes
#   tests/bench/ctk_compare.sh --check      # print the paths it would use, run nothing
set -euo pipefail
START_DIR="$PWD"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${CTK_VENV:-$ROOT/target/ctk-venv}"
# ctk_compare.py changes into a temporary directory: every path it gets
# must be absolute.
case "$VENV" in
  /*) ;;
  *) VENV="$START_DIR/$VENV" ;;
esac
CHAOS="$VENV/bin/chaos"
FAULTLINE="$ROOT/target/release/faultline"
fail() {
  echo "ctk_compare.sh: $*" >&2
  exit 1
}
if [ "${1:-}" = "--check" ]; then
  echo "repository: $ROOT"
  echo "venv:       $VENV ($([ -x "$CHAOS" ] && echo "chaos installed" || echo "would be created"))"
  echo "chaos:      $CHAOS"
  echo "faultline:  $FAULTLINE"
  exit 0
fi
cd "$ROOT"
if [ ! -x "$CHAOS" ]; then
  command -v python3 >/dev/null || fail "python3 not found; install it (apt-get install python3 python3-venv) or set CTK_VENV to a venv with chaostoolkit"
  echo "ctk_compare.sh: installing chaostoolkit into $VENV" >&2
  python3 -m venv "$VENV" || fail "cannot create a virtual environment in $VENV; install python3-venv (apt-get install python3-venv) or set CTK_VENV to a venv with chaostoolkit"
  "$VENV/bin/pip" install -q chaostoolkit || fail "cannot install chaostoolkit into $VENV (it comes from PyPI); install it there by hand or set CTK_VENV to a venv that has it"
  [ -x "$CHAOS" ] || fail "chaostoolkit is installed in $VENV but $CHAOS is missing"
fi
cargo build --release --bin faultline -q
if [ $# -eq 0 ]; then set -- 100 1000; fi
"$VENV/bin/python" tests/bench/ctk_compare.py "$FAULTLINE" "$CHAOS" "$@"
