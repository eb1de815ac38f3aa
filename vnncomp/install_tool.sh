#!/usr/bin/env bash
# VNN-COMP: install_tool.sh v1 -- builds ferrocert (release) with the project's own setup.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release
