"""Selects the TaskMessage codec: compiled ``fastq._speedups`` or ``fastq._speedups_py``.

Set ``FASTQ_NO_EXTENSIONS`` to any non-empty value to force the pure-Python
fallback (at build time it skips compiling; at import time it skips loading).
``USING_SPEEDUPS`` tells which one is active.

When the compiled module is missing although nobody asked for pure Python (an
install from the sdist on a machine without a C compiler, or a broken build),
importing fastq emits one :class:`SpeedupsWarning` (a ``RuntimeWarning``) that
says how to get the fast path. It is a warning, not a log record, so that it is
shown once per process by Python's default filters and can be silenced like any
warning (``-W "ignore::RuntimeWarning:fastq._codec"``) or, better, by setting
``FASTQ_NO_EXTENSIONS=1`` to choose pure Python on purpose. Test suites that
turn warnings into errors need a ``default::RuntimeWarning:fastq._codec`` filter
to run on such an install (fastq's own pyproject.toml has it).
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING

NO_EXTENSIONS = bool(os.environ.get("FASTQ_NO_EXTENSIONS")) or sys.implementation.name != "cpython"


class SpeedupsWarning(RuntimeWarning):
    """The compiled codec could not be loaded; fastq runs on the pure-Python codec."""


FAST_PATH_HINT = (
    "for the fast path install a binary wheel (pip install --only-binary=fastq-tasks fastq-tasks) or "
    "reinstall with a C compiler and the Python headers present (Debian/Ubuntu: apt-get install gcc "
    "python3-dev; then pip install --force-reinstall --no-binary=fastq-tasks fastq-tasks); "
    "set FASTQ_NO_EXTENSIONS=1 to use pure Python on purpose without this warning"
)

if TYPE_CHECKING or NO_EXTENSIONS:
    from fastq._speedups_py import IMPLEMENTATION, TaskMessage, decode_message, encode_message, new_task_ids
else:
    try:
        from fastq._speedups import IMPLEMENTATION, TaskMessage, decode_message, encode_message, new_task_ids
    except ImportError as exc:  # depends on how fastq was installed (tested with a pure wheel)
        from fastq._speedups_py import IMPLEMENTATION, TaskMessage, decode_message, encode_message, new_task_ids

        warnings.warn(
            f"fastq: the compiled codec fastq._speedups is not available ({exc}); using the pure-Python "
            f"codec, which encodes and decodes task messages about 13x slower; {FAST_PATH_HINT}",
            SpeedupsWarning,
            stacklevel=1,
        )

USING_SPEEDUPS = IMPLEMENTATION == "cython"

__all__ = ["TaskMessage", "encode_message", "decode_message", "new_task_ids", "IMPLEMENTATION", "USING_SPEEDUPS",
           "SpeedupsWarning"]
