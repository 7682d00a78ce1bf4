#!/usr/bin/env bash
# The dashboard's browser tests (tests/test_web_browser.py) drive Debian's chromium
# through Playwright (never `playwright install`, which downloads a browser build of its
# own). Installs it when it is missing and we are root; quick when it is there already.
set -euo pipefail
CHROMIUM="${PERDURE_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "scripts/ensure-browser.sh: installing Debian's chromium for the browser tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
else
    echo "scripts/ensure-browser.sh: $CHROMIUM is missing and this is not root with apt-get:" \
        "the browser tests will skip (apt-get install chromium)" >&2
fi
