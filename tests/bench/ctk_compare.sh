#!/usr/bin/env bash
# faultline vs Chaos Toolkit, side by side in one run (see ctk_compare.py).
# Makes its own virtual environment with chaostoolkit from PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${CTK_VENV:-target/ctk-venv}"
if [ ! -x "$VENV/bin/chaos" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q chaostoolkit
fi
cargo build --release --bin faultline -q
if [ $# -eq 0 ]; then set -- 100 1000; fi
"$VENV/bin/python" tests/bench/ctk_compare.py target/release/faultline "$VENV/bin/chaos" "$@"
