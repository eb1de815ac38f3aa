#!/usr/bin/env bash
# Installs what the build needs beyond the Rust toolchain: cmake and libclang (the `highs`
# crate builds the HiGHS LP solver from source and generates its bindings with bindgen).
# Idempotent: does nothing when everything is present. Extra package names may be passed.
set -euo pipefail
need=()
for pkg in cmake libclang-dev "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
