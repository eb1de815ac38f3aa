#!/usr/bin/env bash
# VNN-COMP: prepare_instance.sh v1 CATEGORY ONNX VNNLIB
# Nothing to precompute; checks the arguments and that the tool is built, and stops leftovers.
set -euo pipefail
if [ "$#" -ne 4 ] || [ "$1" != "v1" ]; then
  echo "usage: prepare_instance.sh v1 CATEGORY ONNX VNNLIB" >&2
  exit 1
fi
bin="$(dirname "$0")/../target/release/ferrocert"
[ -x "$bin" ] || { echo "ferrocert is not built: run vnncomp/install_tool.sh v1" >&2; exit 1; }
pkill -f "target/release/ferrocert verify" 2>/dev/null || true
[ -f "$3" ] || { echo "missing $3" >&2; exit 1; }
[ -f "$4" ] || { echo "missing $4" >&2; exit 1; }
exit 0
