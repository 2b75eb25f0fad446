"""mkdocs hooks: put generated text into the pages at build time, so it cannot drift from the code.

``<!-- cli-help: fastq-supervisor -->`` becomes the command's ``--help`` (``fastq-supervisor``,
``fastq-scheduler``, ``fastq-demo``, and ``fastq`` with every subcommand; all click commands).
``<!-- readme: Guarantees -->`` becomes the body of that README section (links to files outside
the docs become plain text).
An unknown command or section fails the build.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 100
CLI_HELP = re.compile(r"^<!--\s*cli-help:\s*(\S+)\s*-->\s*$", re.M)
SCRIPTS = {"fastq-supervisor": "fastq.cli.supervisor", "fastq-scheduler": "fastq.cli.scheduler",
           "fastq-demo": "fastq.cli.demo"}
README = re.compile(r"^<!--\s*readme:\s*(.+?)\s*-->\s*$", re.M)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = CLI_HELP.sub(lambda m: cli_help(m.group(1)), markdown)
    return README.sub(lambda m: readme_section(m.group(1)), markdown)


def _block(text: str) -> str:
    return "```text\n" + text.rstrip() + "\n```\n"


def _click_help(command: Any, name: str, parent: Any = None, level: int = 3) -> str:
    import click

    ctx = click.Context(command, info_name=name.split()[-1], parent=parent, terminal_width=WIDTH,
                        max_content_width=WIDTH, help_option_names=["-h", "--help"])
    out = f"{'#' * level} `{name}`\n\n" + _block(command.get_help(ctx)) + "\n"
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                out += _click_help(sub, f"{name} {sub_name}", ctx, min(level + 1, 4))
    return out


def cli_help(command: str) -> str:
    if command in SCRIPTS:
        import importlib

        script = importlib.import_module(SCRIPTS[command]).command
        return _click_help(script, command).split("\n\n", 1)[1]  # without the heading
    if command == "fastq":
        from fastq.cli import cli

        return _click_help(cli, "fastq")
    raise PluginError(f"docs/hooks.py: no help for unknown command {command!r}")


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {re.escape(title)}\s*$", text, re.M)
    if match is None:
        raise PluginError(f"docs/hooks.py: README.md has no section {title!r}")
    level = len(match.group(1))
    rest = text[match.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    body = rest[:end.start()] if end else rest
    body = re.sub(r"!\[[^\]]*\]\((?!https?:)[^)]*\)", "", body)           # local images: dropped
    body = re.sub(r"\[([^\]]+)\]\((?!https?:|#)[^)]*\)", r"\1", body)    # local links: plain text
    return body.strip() + "\n"
