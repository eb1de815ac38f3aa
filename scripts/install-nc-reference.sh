#!/usr/bin/env bash
# Installs the PyTorch Neural Cleanse reference (scripts/neural_cleanse_reference.py) into a
# virtual environment: torch (about 3 GB from PyPI), onnx, numpy. Usage:
#   scripts/install-nc-reference.sh [VENV]      (default: ../venv-nc beside the checkout)
set -euo pipefail
VENV=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/venv-nc"}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch onnx numpy
echo "$VENV/bin/python"
