"""The ``fastq`` command: inspect and manage queues, tasks, servers and periodic tasks.

Modelled on Go Asynq's ``asynq`` CLI (same data, same answers). Tables by default,
``--json`` for scripts. ``--redis-url`` / ``-u`` (or ``$FASTQ_REDIS_URL``; empty counts
as unset) picks the Redis, before the subcommand or after it (``fastq task ls -u URL``;
the one after wins); its password is never printed. On a terminal, human output names the
Redis it used in a first, dim line on stderr (``Redis: redis://...``); ``--json`` output,
error lines and output to pipes or files do not.

Exit codes: 0 when the command did what was asked; 1 for errors found at run time
(Redis unreachable, a queue or task not found, a task to cancel that is not running);
2 for bad usage. Any error is one line on stderr (``Error: ...``), never a traceback
(``FASTQ_DEBUG=1`` shows it).

Every command takes ``--version``; commands with aliases (``ls``/``list``) list the
alias next to the command in ``--help``.

The package also holds the other console scripts, one module each, each cheap to start (none
imports the ``fastq`` command's modules): ``supervisor`` (``fastq-supervisor``), ``scheduler``
(``fastq-scheduler``) and ``demo`` (``fastq-demo``); ``_settings`` gives the first two their
settings from flags, ``FASTQ_*`` variables and a TOML file.

The ``fastq`` group and its helpers are in ``_base``, its subcommands in ``_queue``, ``_task``,
``_misc``, ``_dev`` and ``_dashboard``. They load on first use of a name of this module
(``fastq.cli.main``, ``fastq.cli.cli``...), so ``import fastq.cli.supervisor`` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["main", "cli"]

_SCRIPTS = ("supervisor", "scheduler", "demo")
_COMMANDS = ("fastq.cli._dashboard", "fastq.cli._dev", "fastq.cli._flow", "fastq.cli._misc", "fastq.cli._queue",
             "fastq.cli._task")


def __getattr__(name: str) -> Any:
    """``main``, ``cli`` and the other names of ``fastq.cli._base``, with every subcommand registered."""
    if name.startswith("__") or name in _SCRIPTS:  # the import system then imports the submodule
        raise AttributeError(f"module 'fastq.cli' has no attribute {name!r}")
    _base = importlib.import_module("fastq.cli._base")
    if not hasattr(_base, name):  # e.g. a submodule not imported yet: the import system tries that next
        raise AttributeError(f"module 'fastq.cli' has no attribute {name!r}")
    for module in _COMMANDS:  # each registers its commands on _base.cli
        importlib.import_module(module)
    value = getattr(_base, name)
    globals()[name] = value
    return value
