"""Selects the TaskMessage codec: compiled ``fastq._speedups`` or ``fastq._speedups_py``.

Set ``FASTQ_NO_EXTENSIONS`` to any non-empty value to force the pure-Python
fallback (at build time it skips compiling; at import time it skips loading).
``USING_SPEEDUPS`` tells which one is active.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

NO_EXTENSIONS = bool(os.environ.get("FASTQ_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

if TYPE_CHECKING or NO_EXTENSIONS:
    from fastq._speedups_py import IMPLEMENTATION, TaskMessage, decode_message, encode_message
else:
    try:
        from fastq._speedups import IMPLEMENTATION, TaskMessage, decode_message, encode_message
    except ImportError:  # pragma: no cover - depends on how fastq was installed
        from fastq._speedups_py import IMPLEMENTATION, TaskMessage, decode_message, encode_message

USING_SPEEDUPS = IMPLEMENTATION == "cython"

__all__ = ["TaskMessage", "encode_message", "decode_message", "IMPLEMENTATION", "USING_SPEEDUPS"]
