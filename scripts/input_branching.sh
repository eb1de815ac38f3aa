#!/usr/bin/env bash
# Input splitting's two rules for the split dimension, side by side: `ferrocert verify
# --input-branching lookahead|sb` (fresh process, default threads, full 116 s limit, one run
# each, the rules alternated per instance so both see the same machine) on the six hardest
# ACAS Xu instances of scripts/acas_hard.sh and the repo's ACAS Xu 1_1 properties 2-4; writes
# paper/results/input_branching.csv (time, domains bounded, proof-tree nodes).
# Usage: scripts/input_branching.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
a=../shared/benchmarks/acasxu
out=paper/results/input_branching.csv
echo "instance,rule,result,time_s,domains,tree_nodes" > "$out"
insts=()
if [ -d "$a" ]; then
  while IFS=, read -r inst _; do
    net=${inst% prop_*}; prop=${inst#* }
    insts+=("$inst|$a/onnx/ACASXU_run2a_${net}_batch_2000.onnx|$a/vnnlib/$prop.vnnlib")
  done < <(tail -n +2 paper/results/acasxu_hard_nnenum.csv)
else
  echo "../shared/benchmarks/acasxu not found: the repo's instances only" >&2
fi
for p in 2 3 4; do
  insts+=("1_1 prop_$p (repo)|models/ACASXU_run2a_1_1_batch_2000.onnx|specs/acasxu/prop_$p.vnnlib")
done
for entry in "${insts[@]}"; do
  IFS='|' read -r inst onnx spec <<< "$entry"
  for rule in lookahead sb; do
    # verify exits 1 on sat and 3 on unknown or timeout: the JSON says which.
    { ./target/release/ferrocert verify "$onnx" "$spec" --timeout 116 --json \
        --input-branching "$rule" || true; } | python3 -c '
import json, sys
d = json.load(sys.stdin)
nodes = sum(p["nodes"] for p in d.get("proof") or []) or ""
bab = d.get("bab") or {}
print(",".join(map(str, [sys.argv[1], sys.argv[2], d["result"], round(d["elapsed_s"], 2),
                         bab.get("domains", ""), nodes])))
' "$inst" "$rule" >> "$out"
  done
done
cat "$out"
