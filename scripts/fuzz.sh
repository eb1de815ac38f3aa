#!/usr/bin/env bash
# Mutation-fuzz the readers (ONNX, VNN-LIB, .npy): EXECS executions per reader (default 10^6),
# every panic and every over-budget allocation saved under target/fuzz-crashes/.
#   scripts/fuzz.sh [EXECS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export FERROCERT_FUZZ_EXECS="${1:-1000000}"
export FERROCERT_FUZZ_SEED="${2:-0}"
exec cargo test --release --test fuzz_readers -- --ignored --nocapture fuzz_readers_long
