#!/usr/bin/env bash
# Times `ferrocert verify` (fresh process, default threads, full 116 s limit) on the six ACAS Xu
# instances that were hardest for ferrocert and nnenum, one at a time, and writes
# paper/results/acasxu_hard.csv beside the nnenum anchors of paper/results/acasxu_hard_nnenum.csv
# (nnenum from its public repository, 2 worker processes, one instance at a time, on a 2-core
# machine of this kind). Usage: scripts/acas_hard.sh [REPS] (median of REPS runs, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
reps=${1:-3}
a=../shared/benchmarks/acasxu
out=paper/results/acasxu_hard.csv
echo "instance,result,ferrocert_s,nnenum_s,speedup" > "$out"
tail -n +2 paper/results/acasxu_hard_nnenum.csv | while IFS=, read -r inst nn _; do
  net=${inst% prop_*}; prop=${inst#* }
  ts=()
  for _ in $(seq "$reps"); do
    # verify exits 1 on sat and 3 on unknown: the JSON says which.
    line=$({ ./target/release/ferrocert verify "$a/onnx/ACASXU_run2a_${net}_batch_2000.onnx" \
      "$a/vnnlib/$prop.vnnlib" --timeout 116 --json || true; } | python3 -c \
      'import json,sys; d=json.load(sys.stdin); print(d["result"], d["elapsed_s"])')
    res=${line% *}; ts+=("${line#* }")
  done
  med=$(printf '%s\n' "${ts[@]}" | sort -g | sed -n "$(( (reps + 1) / 2 ))p")
  python3 -c "import sys; i,r,f,n=sys.argv[1:]; print(f'{i},{r},{float(f):.2f},{n},{float(n)/float(f):.1f}')" \
    "$inst" "$res" "$med" "$nn" >> "$out"
done
cat "$out"
