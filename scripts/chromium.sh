#!/usr/bin/env bash
# Debian's chromium for the hub's browser tests (Playwright drives this binary; it never
# downloads a browser of its own). Installs with apt-get when chromium is missing (needs root).
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing: sudo apt-get install chromium" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
