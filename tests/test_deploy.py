"""deploy/: the Dockerfile, Compose file, systemd units and Kubernetes manifests, checked without running them.

No Docker engine or Kubernetes cluster is needed: the Dockerfile is linted by hadolint and its build
commands compared with scripts/wheel-check.sh's; compose.yaml is checked against the Compose spec's
JSON schema (vendored by check-jsonschema); the Kubernetes objects against the API's schemas
(kubernetes-validate, strict); the KEDA ScaledObject against the fields KEDA documents; the
systemd units with ``systemd-analyze verify``. Every command line in these files is checked against
the ``--help`` of the console script it runs, and every stop timeout against ``--shutdown-timeout`` +
the supervisor's ``KILL_GRACE``. What tini does as PID 1 is run for real in a PID namespace.

A tool that is missing skips its test with the reason, except under CI (``CI`` set), where it fails:
the [dev] extra and .ci/run install them. ``systemd-analyze`` is the exception: it comes with the
machine's systemd, which a machine may lack, so its test skips without it everywhere.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastq import keys
from fastq.server.supervisor import KILL_GRACE

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CI = bool(os.environ.get("CI"))
try:
    import yaml
except ModuleNotFoundError:
    if CI:
        raise
    pytest.skip("PyYAML is in the [dev] extra: pip install -e '.[dev]'", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = set(PYPROJECT["project"]["scripts"])
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def missing(what: str) -> None:
    """Skip (fail under CI) for a tool this machine lacks."""
    if CI:
        pytest.fail(f"{what} (CI is set: the [dev] extra and .ci/run must provide it)")
    pytest.skip(what)


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        missing(f"{name} is not installed")
    return str(path)


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# ------------------------------------------------------------------ command lines against --help


@functools.lru_cache(maxsize=None)
def help_options(*command: str) -> frozenset[str]:
    """The long options that ``COMMAND --help`` lists, e.g. help_options("fastq", "dashboard")."""
    out = subprocess.run([tool(command[0]), *command[1:], "--help"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    return frozenset(OPTION.findall(out.stdout))


def check_command(argv: list[str]) -> None:
    """argv runs a console script of fastq-tasks, and every --option in it is in that command's --help."""
    assert argv[0] in SCRIPTS, f"{argv[0]!r} is not a console script of fastq-tasks ({sorted(SCRIPTS)})"
    command = [argv[0]]
    if argv[0] == "fastq":  # the click group: options after the subcommand belong to it
        command.append(next(a for a in argv[1:] if not a.startswith("-")))
    used = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
    unknown = used - help_options(*command)
    assert not unknown, f"{' '.join(command)} has no option {sorted(unknown)}"
    if argv[0] in ("fastq-supervisor", "fastq-scheduler"):  # and the command accepts the values
        from fastq.cli import scheduler as scheduler_cli
        from fastq.cli import supervisor as supervisor_cli

        command = supervisor_cli.command if argv[0] == "fastq-supervisor" else scheduler_cli.command
        command.make_context(argv[0], argv[1:])  # parses and converts every value; raises on a bad one


def option_value(argv: list[str], option: str, default: float | None = None) -> float:
    for i, arg in enumerate(argv):
        if arg == option:
            return float(argv[i + 1])
        if arg.startswith(option + "="):
            return float(arg.split("=", 1)[1])
    assert default is not None, f"{option} not in {argv}"
    return default


def shutdown_budget(argv: list[str]) -> float:
    """Longest graceful stop of this fastq-supervisor command line: --shutdown-timeout + KILL_GRACE."""
    from fastq.cli import supervisor as supervisor_cli

    default = next(p.default for p in supervisor_cli.command.params if p.name == "shutdown_timeout")
    return option_value(argv, "--shutdown-timeout", float(default if default is not None else 8)) + KILL_GRACE


def test_the_help_check_catches_an_unknown_option():
    with pytest.raises(AssertionError, match="--no-such-option"):
        check_command(["fastq-supervisor", "--no-such-option", "1", "tasks:mux"])
    with pytest.raises(AssertionError, match="not a console script"):
        check_command(["celery", "worker"])


def test_the_deploy_app_has_what_the_files_name():
    """deploy/app/tasks.py (copied into the image) has the APP and the scheduler the files run."""
    import fastq

    out = subprocess.run([sys.executable, "-c", "import tasks, fastq; print(type(tasks.mux).__name__, "
                          "type(tasks.scheduler).__name__)"], cwd=DEPLOY / "app", capture_output=True, text=True,
                         env={**os.environ, "FASTQ_REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [fastq.ServeMux.__name__, fastq.Scheduler.__name__]


# ------------------------------------------------------------------ Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr in dockerfile():
        if instr[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instr)
    return result


def shell_commands(text: str) -> list[list[str]]:
    """A RUN / script line split into its commands (at && || ; |), each tokenised as the shell would
    (quotes removed, variables left as written), redirections and what follows them dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = []
    current: list[str] = []
    redirected = False
    for tok in lexer:
        if tok in ("&&", "||", ";", "|", "&", "(", ")"):
            if current:
                commands.append(current)
            current, redirected = [], False
        elif set(tok) <= set("<>&"):
            redirected = True
        elif not redirected:
            current.append(tok)
    if current:
        commands.append(current)
    return commands


def script_commands(text: str) -> list[list[str]]:
    """The commands of a shell script, line by line (continuations joined, comments and lines the
    tokeniser cannot read alone, such as here-documents, skipped)."""
    commands = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        if line.lstrip().startswith("#"):
            continue
        try:
            commands += shell_commands(line)
        except ValueError:
            continue
    return commands


def env_values(instructions: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for word, rest in instructions:
        if word == "ENV":
            for tok in shlex.split(rest):
                name, _, value = tok.partition("=")
                values[name] = value
    return values


def expand(tokens: list[str], values: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), t) for t in tokens]


def test_dockerfile_passes_hadolint():
    hadolint = tool("hadolint")
    out = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_hadolint_is_really_linting(tmp_path):
    hadolint = tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install -y tini\n")
    out = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "DL3006" in out.stdout and "DL3008" in out.stdout, out.stdout


def test_dockerfile_builds_the_wheel_with_wheel_checks_commands():
    """The build stage runs scripts/wheel-check.sh's own commands: the tools venv in $OUT/tools with
    `build` in it, then `FASTQ_REQUIRE_EXTENSIONS=1 $OUT/tools/bin/python -m build --outdir $OUT/dist .`."""
    build = stages()[0]
    values = env_values(build)
    assert "OUT" in values, "the build stage sets ENV OUT like wheel-check.sh's $OUT"
    docker = [expand(c, values) for word, rest in build if word == "RUN" for c in shell_commands(rest)]

    script = (ROOT / "scripts" / "wheel-check.sh").read_text()
    script_values = {"OUT": values["OUT"], "PYTHON": "python3"}  # ${PYTHON:-python3}
    check = [expand(c, script_values) for c in script_commands(script) if c[:1] != ["step"]]

    def the(commands, predicate, what):
        found = [c for c in commands if predicate(c)]
        assert found, f"no {what}"
        return found[0]

    wheel_build = the(check, lambda c: "build" in c and "-m" in c and "FASTQ_REQUIRE_EXTENSIONS=1" in c,
                      "release build (FASTQ_REQUIRE_EXTENSIONS=1 ... -m build) in wheel-check.sh")
    assert the(docker, lambda c: "build" in c and "-m" in c and "--outdir" in c, "python -m build in the Dockerfile") \
        == wheel_build
    venv = the(check, lambda c: c[1:3] == ["-m", "venv"] and c[3].endswith("/tools"), "tools venv in wheel-check.sh")
    assert the(docker, lambda c: c[1:3] == ["-m", "venv"], "tools venv in the Dockerfile") == venv
    installs = [c for c in docker if c[:4] == [f"{values['OUT']}/tools/bin/python", "-m", "pip", "install"]]
    assert any(re.fullmatch(r"build(==[\d.]+)?", t) for c in installs for t in c), "build is installed in the tools"
    assert any(t == "build" for c in check if "install" in c for t in c), "wheel-check.sh installs build"


def test_dockerfile_runtime_stage():
    build, runtime = stages()
    assert re.search(r"\bAS build$", build[0][1]) and "slim" in runtime[0][1]
    assert runtime[0][1].split(":")[0] == build[0][1].split(":")[0], "the same Python in both stages (cp wheel)"
    instr = {word: rest for word, rest in runtime}  # the last of each
    user = instr["USER"].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "a numeric non-root USER (runAsNonRoot can check it)"
    assert instr["STOPSIGNAL"] == "SIGTERM"
    entrypoint, cmd = json.loads(instr["ENTRYPOINT"]), json.loads(instr["CMD"])
    assert Path(entrypoint[0]).name == "tini" and "-g" not in entrypoint, \
        "tini forwards SIGTERM to the supervisor only: with -g every worker would get a second SIGTERM"
    check_command(cmd)
    assert cmd[0] == "fastq-supervisor"
    health = instr["HEALTHCHECK"]
    assert health.split("CMD", 1)[1].strip().startswith('["fastq", "check"'), health
    check_command(json.loads(health.split("CMD", 1)[1]))
    runs = " ".join(rest for word, rest in runtime if word == "RUN")
    assert re.search(r"apt-get install .*\btini=", runs), "tini comes from Debian, version pinned"
    version = PYPROJECT["project"]["version"]
    assert f'"fastq-tasks[prometheus,dashboard]=={version}"' in runs, f"the runtime installs fastq-tasks {version}"
    assert any(word == "COPY" and rest.startswith("--from=build ") for word, rest in runtime)
    env = env_values(runtime)
    assert env["FASTQ_APP"] == "tasks:mux" and "/opt/fastq/bin" in env["PATH"]


# ------------------------------------------------------------------ .dockerignore


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore lines as (negated, pattern) with Docker's matching: * and ? within a path element,
    ** across elements; a pattern matching a directory also matches everything under it."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip().strip("/") if negated else line.strip("/")
        rx, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(rx + r"\Z")))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    keep = True
    for negated, rx in rules:  # the last matching rule decides
        if any(rx.match(p) for p in prefixes):
            keep = negated
    return keep


def test_dockerignore_sends_what_the_build_needs_and_nothing_else():
    rules = ignore_rules((ROOT / ".dockerignore").read_text())
    needed = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "fastq/__init__.py", "fastq/_speedups.pyx",
              "fastq/py.typed", "deploy/app/tasks.py", "tests/test_wheel.py", "mkdocs.yml"]
    needed += [str(p.relative_to(ROOT)) for p in (ROOT / "fastq").rglob("*")
               if p.is_file() and p.suffix in (".py", ".lua", ".pyx") and "__pycache__" not in p.parts]
    assert [p for p in needed if not in_context(p, rules)] == []
    kept_out = [".venv/bin/python", ".git/config", "tests/test_deploy.py", "build/lib/fastq/__init__.py",
                "fastq/__pycache__/client.cpython-311.pyc", "fastq/_speedups.cpython-311-x86_64-linux-gnu.so",
                "fastq/_speedups.c", "deploy/fastq.env", "dump.rdb", "bench/run.py"]
    assert [p for p in kept_out if in_context(p, rules)] == []
    # every COPY source of the Dockerfile (not --from) is in the context
    for word, rest in dockerfile():
        if word == "COPY" and not rest.startswith("--from"):
            source = expand([shlex.split(rest)[0]], {"APP_SRC": "deploy/app"})[0].rstrip("/")
            if source != ".":
                assert in_context(source, rules) and (ROOT / source).exists(), source


# ------------------------------------------------------------------ fastq check (HEALTHCHECK, probes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fastq_check_exits_non_zero_when_redis_is_unreachable(redis_url):
    fastq = tool("fastq")
    down = subprocess.run([fastq, "-u", f"redis://127.0.0.1:{free_port()}/0", "check", "--timeout", "2"],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode != 0 and "cannot reach Redis" in down.stderr, down.stderr
    up = subprocess.run([fastq, "check", "--timeout", "5"], capture_output=True, text=True, timeout=30,
                        env={**os.environ, "FASTQ_REDIS_URL": redis_url})
    assert up.returncode == 0 and up.stdout.startswith("OK"), up.stdout + up.stderr


SLOW_APP = """
import asyncio
import redis.asyncio as redis
import fastq

mux = fastq.ServeMux()

@mux.handle("slow")
async def slow(task):
    r = redis.Redis.from_url(__import__("os").environ["FASTQ_REDIS_URL"])
    await r.set("deploy:started", "1")
    await asyncio.sleep(2)
    await r.set("deploy:finished", "1")
    await r.aclose()
"""


def test_sigterm_to_tini_as_pid_1_stops_the_supervisor_gracefully(tmp_path, redis_url, r):
    """The container's process tree, without Docker: tini is PID 1 of a new PID namespace and
    fastq-supervisor its child. SIGTERM to tini (what `docker stop` / the kubelet send) reaches the
    supervisor once: the running task finishes, and everything exits 0."""
    tini, unshare = tool("tini"), tool("unshare")
    probe = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        missing(f"cannot make a PID namespace here: {probe.stderr.strip()}")
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    import fastq

    with fastq.Client(redis_url) as client:
        client.enqueue(fastq.Task("slow", b""))
    env = {**os.environ, "FASTQ_REDIS_URL": redis_url, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([unshare, "--pid", "--fork", "--mount-proc", tini, "--", tool("fastq-supervisor"),
                             "--processes", "1", "--shutdown-timeout", "10", "slowapp:mux"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while r.get("deploy:started") is None:
            assert time.monotonic() < deadline and proc.poll() is None, "the task never started"
            time.sleep(0.05)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1
        tini_pid = int(children[0])
        assert Path(f"/proc/{tini_pid}/comm").read_text().strip() == "tini"
        os.kill(tini_pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert r.get("deploy:finished") == b"1", output
    assert "stopping workers gracefully" in output and "stopping workers now" not in output, output
    assert re.search(r"supervisor \d+ stopped", output), output


# ------------------------------------------------------------------ compose.yaml


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_schema() -> dict:
    try:
        from importlib.resources import files

        text = (files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    except ModuleNotFoundError:
        missing("check-jsonschema (it ships the Compose spec's JSON schema) is not installed")
    return json.loads(text)


def schema_errors(schema: dict, doc: object) -> list[str]:
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_spec():
    schema = compose_schema()
    doc = compose()
    assert schema_errors(schema, doc) == []
    typo = copy.deepcopy(doc)
    typo["services"]["worker"]["stop_grace"] = "45s"
    assert schema_errors(schema, typo), "the schema must refuse an unknown key"


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert m and duration, duration
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def test_compose_services():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"redis", "worker", "scheduler", "dashboard"}
    redis_cmd = services["redis"]["command"]
    joined = " ".join(map(str, redis_cmd))
    assert "--appendonly yes" in joined and "--appendfsync everysec" in joined
    assert "--maxmemory-policy noeviction" in joined
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"]), "the AOF lives on a volume"
    assert "redis-data" in doc["volumes"]
    for name in ("worker", "scheduler", "dashboard"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile" and service["image"]
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        check_command([str(a) for a in service["command"]])
        assert service["environment"]["FASTQ_REDIS_URL"].startswith("redis://redis:")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        if "healthcheck" in service:
            check_command(service["healthcheck"]["test"][1:])
    worker = [str(a) for a in services["worker"]["command"]]
    assert worker[0] == "fastq-supervisor" and services["worker"]["stop_signal"] == "SIGTERM"
    assert seconds(services["worker"]["stop_grace_period"]) > shutdown_budget(worker), \
        "Docker's SIGKILL must come after the supervisor's own graceful stop"
    port = int(option_value(worker, "--metrics-port"))
    assert any(p.endswith(f":{port}") for p in services["worker"]["ports"])
    assert services["scheduler"]["command"][0] == "fastq-scheduler"
    assert services["dashboard"]["command"][:2] == ["fastq", "dashboard"]


def test_compose_env_file_example_has_the_dashboard_token():
    for name, service in compose()["services"].items():
        for env_file in service.get("env_file", []):
            example = DEPLOY / (env_file + ".example")
            assert example.exists(), f"{name}: {env_file} has no {example.name} to copy"
            assert re.search(r"^FASTQ_DASHBOARD_TOKEN=\S+", example.read_text(), re.M)
    assert "fastq.env" in compose()["services"]["dashboard"]["env_file"]


# ------------------------------------------------------------------ systemd units


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: {section: {key: [values]}} (keys may repeat), with \\ continuations joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    text = re.sub(r"\\\n[ \t]*", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


UNITS = ["fastq-supervisor.service", "fastq-scheduler.service"]
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
             "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
             "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "CapabilityBoundingSet": ""}


@pytest.mark.parametrize("name", UNITS)
def test_systemd_unit(name):
    service = unit(DEPLOY / "systemd" / name)["Service"]
    one = {key: values[-1] for key, values in service.items()}
    argv = shlex.split(one["ExecStart"])
    assert Path(argv[0]).name == name.removesuffix(".service")
    check_command([Path(argv[0]).name, *argv[1:]])
    assert one["KillSignal"] == "SIGTERM" and one["Restart"] == "on-failure"
    # mixed: SIGTERM to the main process only (control-group would signal every worker too, and a
    # worker's second SIGTERM, the supervisor's, means "stop at once"); SIGKILL to all at the timeout.
    assert one["KillMode"] == "mixed"
    if argv[0].endswith("fastq-supervisor"):
        assert float(one["TimeoutStopSec"]) > shutdown_budget(argv)
    for key, value in HARDENING.items():
        assert one.get(key) == value, f"{name}: {key}={value}"
    assert one["User"] != "root"


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify(name, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # part of systemd, not of the project: a machine without it skips even under CI
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    text = (DEPLOY / "systemd" / name).read_text()
    # verify checks that ExecStart's program exists: point it at this venv's console script
    text = text.replace("/opt/fastq/bin/", f"{BIN}/")
    (tmp_path / name).write_text(text)
    out = subprocess.run([analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=30,
                         cwd=tmp_path)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_systemd_analyze_verify_reports_unknown_keys(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    text = (DEPLOY / "systemd" / UNITS[0]).read_text().replace("/opt/fastq/bin/", f"{BIN}/")
    (tmp_path / UNITS[0]).write_text(text.replace("KillMode=mixed", "KillMood=mixed"))
    out = subprocess.run([analyze, "verify", str(tmp_path / UNITS[0])], capture_output=True, text=True, timeout=30)
    assert "KillMood" in out.stdout + out.stderr


# ------------------------------------------------------------------ Kubernetes


def k8s_objects() -> list[tuple[str, dict]]:
    return [(p.name, doc) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
            for doc in load_all(p)]


def find(kind: str, name: str) -> dict:
    found = [doc for _, doc in k8s_objects() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def kubernetes_validate():
    try:
        import kubernetes_validate
    except ModuleNotFoundError:
        missing("kubernetes-validate is not installed (it is in the [dev] extra)")
    return kubernetes_validate


def test_kubernetes_objects_match_the_api_schemas():
    kv = kubernetes_validate()
    core = [(f, doc) for f, doc in k8s_objects() if not doc["apiVersion"].startswith("keda.sh/")]
    assert {doc["kind"] for _, doc in core} == {"Namespace", "Secret", "Deployment", "Service"}
    for file, doc in core:
        try:
            kv.validate(doc, kv.latest_version(), strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{file}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
    typo = copy.deepcopy(find("Deployment", "fastq-worker"))
    typo["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kv.ValidationError):
        kv.validate(typo, kv.latest_version(), strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    images = {i["name"] for i in kustomization["images"]}
    for _, doc in k8s_objects():
        if doc["kind"] == "Deployment":
            assert container(doc)["image"] in images
    namespace = kustomization["namespace"]
    assert find("Namespace", namespace)


def test_worker_deployment():
    worker = find("Deployment", "fastq-worker")
    pod = worker["spec"]["template"]
    main = container(worker)
    assert "command" not in main, "command would replace the image's ENTRYPOINT (tini); use args"
    args = [str(a) for a in main["args"]]
    check_command(args)
    assert args[0] == "fastq-supervisor"
    assert pod["spec"]["terminationGracePeriodSeconds"] > shutdown_budget(args)
    port = int(option_value(args, "--metrics-port"))
    assert args[args.index("--metrics-host") + 1] == "0.0.0.0", "Prometheus scrapes from outside the pod"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports["metrics"] == port
    # processes = the CPU request: os.cpu_count() in a pod is the node's count
    assert float(main["resources"]["requests"]["cpu"]) == option_value(args, "--processes")
    assert main["resources"]["limits"]["memory"]
    liveness, readiness = main["livenessProbe"], main["readinessProbe"]
    assert liveness["httpGet"]["path"] == "/metrics" and liveness["httpGet"]["port"] == "metrics"
    check_command(readiness["exec"]["command"])
    assert readiness["exec"]["command"][:2] == ["fastq", "check"]
    assert readiness["timeoutSeconds"] > option_value(readiness["exec"]["command"], "--timeout")
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"/tmp"} <= {m["mountPath"] for m in main["volumeMounts"]}, "Prometheus multiprocess files go to /tmp"


def test_scheduler_and_dashboard_deployments():
    scheduler = find("Deployment", "fastq-scheduler")
    assert scheduler["spec"]["replicas"] == 1
    args = container(scheduler)["args"]
    assert args[0] == "fastq-scheduler"
    check_command(args)
    dashboard = find("Deployment", "fastq-dashboard")
    main = container(dashboard)
    check_command(main["args"])
    assert main["args"][:2] == ["fastq", "dashboard"]
    token = [e for e in main["env"] if e["name"] == "FASTQ_DASHBOARD_TOKEN"]
    assert token and "secretKeyRef" in token[0]["valueFrom"], "the token comes from a Secret"
    service = find("Service", "fastq-dashboard")
    labels = dashboard["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    named = {p["name"] for p in main["ports"]}
    assert all(p["targetPort"] in named for p in service["spec"]["ports"])
    assert int(main["args"][main["args"].index("--port") + 1]) == main["ports"][0]["containerPort"]
    host = main["livenessProbe"]["httpGet"]["httpHeaders"][0]
    assert host == {"name": "Host", "value": "localhost"}, "the dashboard refuses unknown Host headers"


def test_every_secret_reference_exists():
    secrets = {doc["metadata"]["name"]: doc for _, doc in k8s_objects() if doc["kind"] == "Secret"}
    refs = 0
    for _, doc in k8s_objects():
        if doc["kind"] != "Deployment":
            continue
        for env in container(doc).get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs += 1
                assert ref["key"] in secrets[ref["name"]]["stringData"], ref
    assert refs >= 4


# ------------------------------------------------------------------ KEDA ScaledObject

# The fields of a ScaledObject (keda.sh/v1alpha1) and of its parts that these files may use, as
# KEDA documents them; anything else is a typo that the API server would silently drop.
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
SCALE_TARGET_REF = {"name", "kind", "apiVersion", "envSourceContainerName"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
# The metadata the redis scaler reads (KEDA's redis scaler documentation).
REDIS_SCALER_METADATA = {"address", "addresses", "host", "hosts", "port", "ports", "username", "password",
                         "sentinelUsername", "sentinelPassword", "sentinelMaster", "unsafeSsl", "listLength",
                         "activationListLength", "listName", "databaseIndex", "enableTLS"}


def scaled_object() -> dict:
    docs = load_all(K8S / "keda-scaledobject.yaml")
    assert len(docs) == 1
    return docs[0]


def scaled_object_field_errors(so: dict) -> list[str]:
    """Fields of ``so`` that a ScaledObject does not have (empty when it is well formed)."""
    errors = [f"metadata.{k}" for k in set(so["metadata"]) - {"name", "namespace", "labels", "annotations"}]
    spec = so["spec"]
    errors += [f"spec.{k}" for k in set(spec) - SCALED_OBJECT_SPEC]
    errors += [f"spec.scaleTargetRef.{k}" for k in set(spec["scaleTargetRef"]) - SCALE_TARGET_REF]
    for n, trigger in enumerate(spec["triggers"]):
        errors += [f"spec.triggers[{n}].{k}" for k in set(trigger) - TRIGGER]
    return errors


def test_scaled_object_has_only_fields_keda_knows():
    so = scaled_object()
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
    assert scaled_object_field_errors(so) == []
    typo = copy.deepcopy(so)
    typo["spec"]["triggers"][0]["metdata"] = typo["spec"]["triggers"][0].pop("metadata")
    assert scaled_object_field_errors(typo) == ["spec.triggers[0].metdata"], "a typo must be caught"


def test_scaled_object_scales_the_worker_on_the_pending_list():
    so = scaled_object()
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
    spec = so["spec"]
    worker = find("Deployment", "fastq-worker")
    assert spec["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    trigger = spec["triggers"][0]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert set(meta) <= REDIS_SCALER_METADATA, set(meta) - REDIS_SCALER_METADATA
    assert all(isinstance(v, str) for v in meta.values()), "trigger metadata values are strings"
    assert meta["listName"] == keys.pending_key("default") == "asynq:{default}:pending"
    assert int(meta["listLength"]) > 0
    assert re.fullmatch(r"[\w.-]+:\d+", meta["address"]), meta["address"]
    queues = container(worker)["args"][container(worker)["args"].index("--queues") + 1]
    served = {q.split("=")[0] for q in queues.split(",")}
    for t in spec["triggers"]:
        qname = re.fullmatch(r"asynq:\{(.+)\}:pending", t["metadata"]["listName"]).group(1)
        assert qname in served, f"the workers do not serve queue {qname!r}"


# ------------------------------------------------------------------ docs/ops/deploy.md


def test_deploy_page_shows_the_files_as_they_are():
    """Each block of docs/ops/deploy.md whose first line is '# deploy/<file>...' is that file, verbatim."""
    page = (ROOT / "docs" / "ops" / "deploy.md").read_text()
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", page, re.M | re.S)
    shown = 0
    for _lang, block in blocks:
        m = re.match(r"# (deploy/[\w./-]+)", block)
        if m:
            shown += 1
            assert block == (ROOT / m.group(1)).read_text(), f"{m.group(1)} differs from its copy in deploy.md"
    assert shown >= 4


def test_deploy_page_dockerfile_snippets_pass_hadolint(tmp_path):
    hadolint = tool("hadolint")
    page = (ROOT / "docs" / "ops" / "deploy.md").read_text()
    snippets = re.findall(r"^```dockerfile\n(.*?)^```", page, re.M | re.S)
    assert len(snippets) >= 2
    for n, snippet in enumerate(snippets):
        (tmp_path / f"Dockerfile.{n}").write_text(snippet)
        out = subprocess.run([hadolint, "--no-color", str(tmp_path / f"Dockerfile.{n}")], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, f"docs/ops/deploy.md dockerfile block {n + 1}:\n{out.stdout}"
