#!/usr/bin/env bash
# Set up (venv + install) and run the test suite. Needs redis-server on PATH (the tests start
# their own instances on free ports). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v redis-server >/dev/null 2>&1; then
    echo "scripts/test.sh: redis-server is not installed (Debian/Ubuntu: sudo apt-get install -y redis-server)" >&2
    exit 2
fi
exec .venv/bin/python -m pytest "$@"
