"""The mkdocs site: builds with --strict, its generated parts are there, its code is real.

The quick start is run as written: its tasks.py and producer.py blocks, its
fastq-supervisor command line, against a real redis-server.
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
    from fastq.scheduler_cli import build_parser as scheduler_parser
    from fastq.server.cli import build_parser

    html = (site / "ops" / "cli" / "index.html").read_text()
    for parser in (build_parser(), scheduler_parser()):
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in html, flag
    for name in cli.commands:
        assert f"<code>fastq {name}</code>" in html, name
    assert "<code>fastq task ls</code>" in html and "--print-config" in html


def test_readme_sections_are_included(site):
    readme = (ROOT / "README.md").read_text()
    assert "at-least-once" in readme
    assert "<strong>at-least-once</strong>" in (site / "guarantees" / "index.html").read_text()
    assert "<strong>Batching.</strong>" in (site / "asynq" / "index.html").read_text()


def test_a_missing_readme_section_fails_the_build(tmp_path):
    """The hook cannot silently leave a marker unfilled."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# x\n\n<!-- readme: No Such Section -->\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"site_name: t\ndocs_dir: {tmp_path / 'docs'}\nhooks:\n  - {DOCS / 'hooks.py'}\n")
    out = mkdocs_build(config, tmp_path / "site")
    assert out.returncode != 0
    assert "README.md has no section 'No Such Section'" in out.stdout + out.stderr


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_python_snippets_are_valid_python(page):
    blocks = code_blocks(page, "python")
    for block in blocks:
        ast.parse(block.replace("await ", "").replace("async with", "with"))  # top-level await in snippets
    for block in code_blocks(page, "toml"):
        import tomllib

        tomllib.loads(block)


@pytest.mark.slow
def test_quick_start_runs_as_written(tmp_path, redis_url, r):
    blocks = {b.splitlines()[0]: b for b in code_blocks("quickstart.md", "python")}
    (tmp_path / "tasks.py").write_text(blocks["# tasks.py"])
    (tmp_path / "producer.py").write_text(blocks["# producer.py"])
    shell = "\n".join(code_blocks("quickstart.md", "sh"))
    command = next(line for line in shell.splitlines() if line.startswith("fastq-supervisor "))
    argv = shlex.split(command.split("#")[0])
    env = dict(os.environ, FASTQ_REDIS_URL=redis_url)
    sup = subprocess.Popen([sys.executable, "-m", "fastq.server.cli", *argv[1:]], cwd=tmp_path, env=env,
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
