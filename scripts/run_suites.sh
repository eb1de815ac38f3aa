#!/usr/bin/env bash
# Runs every shared VNN-COMP suite through `ferrocert run` and writes one results CSV and one
# summary per suite into bench-results/ (the README's figures). Usage:
#   scripts/run_suites.sh [SUITE...]      (default: all suites; timeouts scaled as below)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
shared=../shared/benchmarks
mkdir -p bench-results
# Timeout scale per suite: 1 where the limits are short; where they are minutes per instance the
# whole run would take hours on 2 cores, so the limit is cut (the README states each scale).
# Override with SCALE_<suite>=F, e.g. SCALE_mnistfc=1 scripts/run_suites.sh mnistfc.
declare -A scale=([acasxu]=1 [mnistfc]=0.25 [test]=1 [digits]=1 [collins_rul_cnn]=0.03 [rl_benchmarks]=0.2
                  [reach_prob_density]=0.1 [oval21]=0.1 [cifar10_resnet]=0.1)
for k in "${!scale[@]}"; do v="SCALE_$k"; [ -n "${!v:-}" ] && scale[$k]="${!v}"; done
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(test digits acasxu mnistfc collins_rul_cnn rl_benchmarks reach_prob_density oval21 cifar10_resnet)
for s in "${suites[@]}"; do
  out="bench-results/$s.csv"
  rm -f "$out"
  start=$(date +%s)
  ./target/release/ferrocert run "$shared/$s/instances.csv" --out "$out" --timeout-scale "${scale[$s]:-1}" \
    > "bench-results/$s.summary" || true
  end=$(date +%s)
  echo "wall time: $((end - start)) s (timeout scale ${scale[$s]:-1})" >> "bench-results/$s.summary"
  echo "== $s"; cat "bench-results/$s.summary"
done
