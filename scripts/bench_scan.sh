#!/usr/bin/env bash
# Side by side on this machine, in one run: `ferrocert scan` (the end-to-end command) against
# the PyTorch Neural Cleanse reference (scripts/neural_cleanse_reference.py, same settings),
# on the bundled digits models and the 450 test images, seeds 0-2; then the certified patch
# bound's stages. Prints a Markdown table.
#   scripts/bench_scan.sh [PYTHON]   PYTHON: the reference's interpreter
#                                    (default: the one scripts/install-nc-reference.sh made)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-"$(cd .. && pwd)/venv-nc/bin/python"}
cargo build --release -q
FC=target/release/ferrocert
DATA=(--data models/data/test_images_all.npy)
LABELS=(--labels models/data/test_labels_all.npy)
echo "| model | seed | ferrocert scan (s) | flagged | PyTorch NC (s) | flagged | speed-up |"
echo "|---|---|---|---|---|---|---|"
for m in digits_mlp_backdoor digits_mlp digits_cnn; do
  shape=(); [ "$m" != digits_cnn ] && shape=(--image-shape 8,8)
  for s in 0 1 2; do
    t0=$(date +%s.%N)
    fj=$($FC scan models/$m.onnx "${DATA[@]}" "${LABELS[@]}" "${shape[@]}" --no-patch --seed $s --json 2>/dev/null || true)
    t1=$(date +%s.%N)
    ff=$(echo "$fj" | python3 -c "import json,sys; print(json.load(sys.stdin)['flagged_labels'])")
    if [ -x "$PY" ]; then
      pj=$($PY scripts/neural_cleanse_reference.py models/$m.onnx "${DATA[@]}" --seed $s --threads 2)
      read -r ps pf < <(echo "$pj" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['seconds'], str(d['flagged_labels']).replace(' ',''))")
    else
      ps=""; pf="(reference not installed)"
    fi
    python3 - "$m" "$s" "$t0" "$t1" "$ff" "$ps" "$pf" <<'PY'
import sys
m, s, t0, t1, ff, ps, pf = sys.argv[1:]
f = float(t1) - float(t0)
up = f"{float(ps) / f:.1f}x" if ps else ""
print(f"| {m} | {s} | {f:.2f} | {ff} | {ps} | {pf} | {up} |")
PY
  done
done
echo
echo "Patch bound stages (seed 0, k = 2 and 3, every position, alpha-CROWN):"
for m in digits_mlp_backdoor digits_cnn; do
  shape=(); [ "$m" != digits_cnn ] && shape=(--image-shape 8,8)
  $FC scan models/$m.onnx "${DATA[@]}" "${LABELS[@]}" "${shape[@]}" --json 2>&1 >/dev/null | sed "s/^/  $m: /" || true
done
