#!/usr/bin/env bash
# Regenerates tests/data/ops/: one small ONNX model per operator variant, with onnxruntime's
# outputs on random inputs. Needs python3; installs onnx, onnxruntime and numpy into a local
# virtual environment (.venv-fixtures, git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-fixtures/bin/python ]; then
  python3 -m venv .venv-fixtures
  .venv-fixtures/bin/pip install -q "onnx==1.23.2" "onnxruntime==1.32.0" "numpy==2.4.6"
fi
.venv-fixtures/bin/python scripts/make_op_fixtures.py tests/data/ops
