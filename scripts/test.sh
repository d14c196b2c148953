#!/usr/bin/env bash
# The default test suite (slow tests are excluded by pytest's config; add `-m slow` for them).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q -p no:cacheprovider "$@"
