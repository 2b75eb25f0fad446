"""What the long-running console scripts (``fastq-supervisor``, ``fastq-scheduler``, ``fastq-demo``)
share: ``--version``, ``-h``/``--help``, and errors as one line, ``<prog>: error: <message>``.

Exit codes: 2 for bad usage (a bad flag, environment variable or config file setting, an APP
that cannot be imported), 1 for an error found while starting (``Fail``), 0 after ``--help``,
``--version`` or ``--print-config``; otherwise what the command returns.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

import click

__all__ = ["Fail", "CONTEXT", "version_option", "run"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Fail(click.ClickException):
    """An error that ends the command with one line and ``code`` (1 by default, 2 for bad usage)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def version_option(prog: str) -> click.Option:
    """``--version``: print ``<prog> <version> (Python ...)`` and exit 0, before anything is checked."""

    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            from fastq._version import version_line

            click.echo(version_line(prog))
            ctx.exit(0)

    return click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True, callback=show,
                        help="show the fastq version and exit")


def run(command: click.Command, argv: Optional[Sequence[str]], prog: str) -> int:
    """Run ``command`` on ``argv`` (default ``sys.argv[1:]``) and return its exit code.

    ``--help``, ``--version`` and ``--print-config`` end with ``SystemExit(0)``; errors print one
    line on stderr and end with ``SystemExit`` (2 for usage errors).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with command.make_context(prog, args) as ctx:
            result: Any = command.invoke(ctx)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:  # UsageError and BadParameter: exit code 2
        sys.stderr.write(f"{prog}: error: {exc.format_message()}\n")
        raise SystemExit(exc.code if isinstance(exc, Fail) else exc.exit_code) from None
    except click.Abort:
        sys.stderr.write(f"{prog}: error: aborted\n")
        raise SystemExit(1) from None
    return int(result or 0)
