"""The line every fastq command prints for ``--version``."""
from __future__ import annotations

import platform


def version_line(prog: str) -> str:
    """``fastq-supervisor 0.1.0 (Python 3.11.2, Cython codec)``: the version, and what runs it."""
    from fastq import __version__
    from fastq._codec import USING_SPEEDUPS

    codec = "Cython codec" if USING_SPEEDUPS else "pure-Python codec"
    return f"{prog} {__version__} (Python {platform.python_version()}, {codec})"
