#!/usr/bin/env bash
# VNN-COMP: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT
# Writes the VNN-COMP result file (sat with the counterexample, unsat, unknown, timeout, error).
set -uo pipefail
if [ "$#" -ne 6 ] || [ "$1" != "v1" ]; then
  echo "usage: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2
  exit 1
fi
onnx="$3"; vnnlib="$4"; result="$5"; timeout="$6"
bin="$(dirname "$0")/../target/release/ferrocert"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The competition may hand out gzip-compressed files.
case "$onnx" in *.gz) gunzip -c "$onnx" > "$tmp/model.onnx"; onnx="$tmp/model.onnx";; esac
case "$vnnlib" in *.gz) gunzip -c "$vnnlib" > "$tmp/spec.vnnlib"; vnnlib="$tmp/spec.vnnlib";; esac
# Leave a little of the budget for process start and the result file.
budget=$(awk -v t="$timeout" 'BEGIN { b = t - 1; if (b < 1) b = t; print b }')
"$bin" verify "$onnx" "$vnnlib" --timeout "$budget" --result-file "$result" > /dev/null
code=$?
# 0 unsat, 1 sat, 3 unknown/timeout: all are answers; 2 means the result file says error.
[ "$code" -eq 2 ] && [ ! -s "$result" ] && echo error > "$result"
exit 0
