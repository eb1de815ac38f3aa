#!/usr/bin/env bash
# Renders a certify report page in headless Chromium and saves a screenshot beside it:
#   scripts/screenshot_report.sh [REPORT_DIR] [WIDTH,HEIGHT]
# Installs Chromium (Debian package `chromium`) when it is missing. The page is opened from
# the file system with every network feature off, so a page that needed the network would
# show the gap.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-ferrocert-report}
SIZE=${2:-1280,3000}
command -v chromium >/dev/null 2>&1 || ./scripts/install-deps.sh chromium
PAGE="$(cd "$DIR" && pwd)/report.html"
[ -f "$PAGE" ] || { echo "no report.html in $DIR (run ferrocert certify first)" >&2; exit 2; }
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$PROFILE" --hide-scrollbars --window-size="$SIZE" \
  --screenshot="$(cd "$DIR" && pwd)/report.png" "file://$PAGE" 2>/dev/null
echo "$DIR/report.png"
