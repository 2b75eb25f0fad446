#!/usr/bin/env bash
# Set up (venv + install) and run the demo: enqueue 100k tasks, drain them with fastq-supervisor.
# Extra arguments go to fastq-demo (e.g. --tasks 20000 --processes 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/fastq-demo "$@"
