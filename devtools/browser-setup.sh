#!/usr/bin/env bash
# Install headless Chromium and chromedriver (the `browser` group of
# devtools/system-packages.txt) for the docs-page test, then render a page with them.
set -euo pipefail
bash "$(dirname "$0")/apt-tools.sh" browser
command -v chromium >/dev/null 2>&1 || exit 0  # not installable here: apt-tools.sh said so
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# The flags the docs-page test uses: no sandbox as root, no background connections.
if ! out="$(timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --no-first-run --user-data-dir="$profile" --dump-dom 'data:text/html,<p id=ok>ok</p>' 2>/dev/null)" \
    || [[ "$out" != *'id="ok"'* ]]; then
    echo "browser set-up: headless chromium did not render a page" >&2
    exit 1
fi
chromedriver --version >/dev/null 2>&1 || { echo "browser set-up: 'chromedriver --version' fails" >&2; exit 1; }
echo "browser ready: $(chromium --version 2>/dev/null)" >&2
