"""The mkdocs site: builds with --strict, its generated parts are there, its code is real.

* Every ```python block of docs/**/*.md and README.md runs, page by page, in order, against a
  real redis-server (tests/docs_blocks.py), unless it starts with ``# not runnable: <reason>``.
* The quick start is also run as written with its fastq-supervisor command line.
* The API reference (mkdocstrings) documents every name of ``fastq.__all__``, from public names only.
* With CI set (or Chromium installed) the built home page and the dashboard are screenshotted.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import headless_chromium
from docs_blocks import not_runnable_reason, python_blocks

from fastq import keys

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytest.importorskip("mkdocs", reason="mkdocs is in the dev and docs extras: pip install -e '.[docs]'")


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def code_blocks(page: str, language: str) -> list[str]:
    text = (DOCS / page).read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    out = mkdocs_build(ROOT / "mkdocs.yml", site)
    assert out.returncode == 0, out.stdout + out.stderr
    return site


def test_docs_build_strictly_with_every_page(site):
    import yaml

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    listed = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert listed == on_disk, (listed ^ on_disk)
    for page in listed:
        html = "index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html"
        assert (site / html).exists(), page


def test_cli_reference_is_the_commands_own_help(site):
    from fastq.cli import cli
    from fastq.cli import scheduler as scheduler_cli
    from fastq.cli import supervisor as supervisor_cli

    html = (site / "ops" / "cli" / "index.html").read_text()
    for command in (supervisor_cli.command, scheduler_cli.command):
        for param in command.params:
            for flag in param.opts if param.param_type_name == "option" else ():
                assert flag in html, flag
    for name in cli.commands:
        assert f"<code>fastq {name}</code>" in html, name
    assert "<code>fastq task ls</code>" in html and "--print-config" in html


def test_readme_keeps_the_two_commands_and_links_to_pages_that_exist():
    """.ci/run runs the README's test command; the README's links into docs/ name real pages."""
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^bash scripts/demo\.sh +# the demo", readme, re.M)
    assert re.search(r"^bash scripts/test\.sh +# the test suite", readme, re.M)
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) > 20
    for link in links:
        assert (ROOT / link).exists(), link
    for marker in re.findall(r"<!--\s*readme:\s*(.+?)\s*-->", "".join(p.read_text() for p in DOCS.rglob("*.md"))):
        assert re.search(rf"^#+ {re.escape(marker)}\s*$", readme, re.M), f"docs include README section {marker!r}"


def test_api_reference_covers_the_public_api_by_public_names(site):
    import fastq

    page = (DOCS / "reference" / "api.md").read_text()
    targets = re.findall(r"^::: (\S+)", page, re.M)
    for target in targets:
        assert not any(part.startswith("_") for part in target.split(".")), f"private name {target}"
        module = target.rsplit(".", 1)[0]
        name = target.rsplit(".", 1)[1]
        if module != "fastq" and name in fastq.__all__:
            raise AssertionError(f"{target}: use fastq.{name}, the name fastq exports")
    missing = [name for name in fastq.__all__ if f"fastq.{name}" not in targets]
    assert not missing, f"not in docs/reference/api.md: {missing}"
    html = (site / "reference" / "api" / "index.html").read_text()
    for name in ("fastq.Client", "fastq.Worker", "fastq.WorkerConfig", "fastq.testing.run_handler",
                 "fastq.Inspector", "fastq.TaskType", "fastq.get_task_id"):
        assert f'id="{name}"' in html, name


def test_a_missing_readme_section_fails_the_build(tmp_path):
    """The hook cannot silently leave a marker unfilled."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# x\n\n<!-- readme: No Such Section -->\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"site_name: t\ndocs_dir: {tmp_path / 'docs'}\nhooks:\n  - {DOCS / 'hooks.py'}\n")
    out = mkdocs_build(config, tmp_path / "site")
    assert out.returncode != 0
    assert "README.md has no section 'No Such Section'" in out.stdout + out.stderr


PAGES = sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md")) + ["README.md"]


def blocks_of(page: str) -> list[tuple[int, str]]:
    return python_blocks((ROOT / page).read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES)
def test_python_snippets_are_valid_python(page):
    for line, block in blocks_of(page):
        ast.parse(block.replace("await ", "").replace("async with", "with"), f"{page}:{line}")
    for block in re.findall(r"^```toml\n(.*?)^```", (ROOT / page).read_text(), re.M | re.S):
        import tomllib

        tomllib.loads(block)


def test_every_python_block_runs_or_says_why_not():
    """A block the runnable-blocks test skips must start with '# not runnable: <reason>'."""
    missing = [f"{page}:{line}" for page in PAGES for line, block in blocks_of(page)
               if not_runnable_reason(block) == ""]
    assert not missing, f"'# not runnable:' without a reason at {missing}"


RUNNABLE_PAGES = [page for page in PAGES if any(not_runnable_reason(b) is None for _, b in blocks_of(page))]
PARALLEL = 8  # pages run at once, each on a Redis database of its own (1..PARALLEL)


@pytest.fixture(scope="module")
def page_runs(redis_server, tmp_path_factory):
    """Run the ```python blocks of every page (tests/docs_blocks.py: in order, one namespace, an empty working
    directory, each block within its BLOCK_TIMEOUT) against the test session's redis-server, several pages
    at once, each page with FASTQ_REDIS_URL on a database of its own, flushed before and after."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    import redis as redis_lib

    base = redis_server.url.rsplit("/", 1)[0]
    free: queue.Queue[int] = queue.Queue()
    for db in range(1, PARALLEL + 1):
        free.put(db)

    def run(page: str) -> tuple[str, subprocess.CompletedProcess[str] | str]:
        db = free.get()
        url = f"{base}/{db}"
        client = redis_lib.Redis.from_url(url)
        try:
            client.flushdb()
            cwd = tmp_path_factory.mktemp("page")
            env = {**os.environ, "FASTQ_REDIS_URL": url, "PYTHONDONTWRITEBYTECODE": "1"}
            env.pop("FASTQ_CONFIG", None)
            try:
                return page, subprocess.run([sys.executable, str(ROOT / "tests" / "docs_blocks.py"), page],
                                            cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired as exc:
                return page, f"timed out after 60 s\n{exc.stdout}\n{exc.stderr}"
        finally:
            client.flushdb()
            client.close()
            free.put(db)

    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(pool.map(run, [str(ROOT / page) for page in RUNNABLE_PAGES]))


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_python_blocks_run_as_written(page, page_runs):
    """Every ```python block of the page runs, in order, against a real Redis; blocks marked
    '# not runnable: <reason>' are skipped."""
    out = page_runs[str(ROOT / page)]
    assert not isinstance(out, str), f"{page}: {out}"
    assert out.returncode == 0, f"{page}: a block failed\n{out.stdout}\n{out.stderr}"
    assert "ran " in out.stdout


@pytest.mark.slow
def test_quick_start_runs_as_written(tmp_path, redis_url, r):
    blocks = {b.splitlines()[0]: b for b in code_blocks("quickstart.md", "python")}
    (tmp_path / "tasks.py").write_text(blocks["# tasks.py"])
    (tmp_path / "producer.py").write_text(blocks["# producer.py"])
    shell = "\n".join(code_blocks("quickstart.md", "sh"))
    command = next(line for line in shell.splitlines() if line.startswith("fastq-supervisor "))
    argv = shlex.split(command.split("#")[0])
    env = dict(os.environ, FASTQ_REDIS_URL=redis_url)
    sup = subprocess.Popen([sys.executable, "-m", "fastq.cli.supervisor", *argv[1:]], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = subprocess.run([sys.executable, "producer.py"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        task_id, queue, state = out.stdout.split()
        assert (queue, state) == ("default", "pending")
        deadline = time.monotonic() + 30
        while not (r.get(keys.processed_total_key("default")) == b"1" and r.zcard(keys.completed_key("low")) == 1):
            assert sup.poll() is None, sup.communicate()[1]
            assert time.monotonic() < deadline, "the quick start's tasks were not processed"
            time.sleep(0.05)
        listing = subprocess.run([sys.executable, "-m", "fastq.cli", "task", "ls", "--queue", "low", "--state",
                                  "completed"], env=env, capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0, listing.stderr
        assert "report:daily" in listing.stdout
    finally:
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
        _, err = sup.communicate(timeout=30)
    assert f"welcome ada@example.com (user 42), task {task_id}" in err
    assert sup.returncode == 0, err


# ---------------------------------------------------------------- screenshots (CI, or wherever Chromium is)

ARTIFACTS = ROOT / "artifacts"


@pytest.fixture
def chromium(tmp_path):
    with headless_chromium(tmp_path / "profile", "1400,1000") as driver:
        yield driver


@pytest.fixture
def served_site(site):
    """The built site over HTTP on a free loopback port (file:// would not load the search index)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_screenshots_of_the_docs_and_the_dashboard(served_site, chromium, redis_url):
    """PNGs of the docs home page, the API reference and the dashboard, in artifacts/ (gitignored)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import fastq

    ARTIFACTS.mkdir(exist_ok=True)
    wait = WebDriverWait(chromium, 20)
    for path, name in (("/", "docs-home.png"), ("/reference/api/", "docs-api.png")):
        chromium.get(served_site + path)
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        assert chromium.find_element(By.CSS_SELECTOR, ".md-header")  # the material theme rendered
        assert chromium.save_screenshot(str(ARTIFACTS / name))
        assert (ARTIFACTS / name).stat().st_size > 10_000, name

    from test_dashboard import TOKEN, start_dashboard_process

    with fastq.Client(redis_url) as client:
        client.enqueue_many([fastq.Task("email:send", b"{}")] * 25)
        client.enqueue_many([fastq.Task("thumb:make", b"{}")] * 40, queue="images")
        client.enqueue(fastq.Task("report:build", b"{}"), queue="low", process_in=3600)
    proc, port = start_dashboard_process(redis_url)
    try:
        chromium.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: d.find_elements(By.ID, "token"))
        chromium.find_element(By.ID, "token").send_keys(TOKEN)
        chromium.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
        wait.until(lambda d: d.find_elements(By.ID, "queues"))
        time.sleep(0.5)  # let the first chart samples arrive
        assert chromium.save_screenshot(str(ARTIFACTS / "dashboard-home.png"))
        assert (ARTIFACTS / "dashboard-home.png").stat().st_size > 10_000
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
