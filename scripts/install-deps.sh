#!/usr/bin/env bash
# Installs what ferrocert needs beyond the Rust toolchain, with apt-get, only when missing:
#   cmake, libclang-dev  the `highs` crate builds the HiGHS LP solver from source and
#                        generates its bindings with bindgen;
#   --test adds          libxml2-utils (xmllint: junit.xml against a JUnit XSD), chromium
#                        (renders report.html headless) and minisign (verifies a signed
#                        report with the reference tool), which the test suite checks with.
# Idempotent: does nothing when everything is present. Extra package names may be passed.
#   scripts/install-deps.sh [--test] [PACKAGE ...]
set -euo pipefail
pkgs=(cmake libclang-dev)
for a in "$@"; do
  case "$a" in
    --test) pkgs+=(libxml2-utils chromium minisign) ;;
    *) pkgs+=("$a") ;;
  esac
done
need=()
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
