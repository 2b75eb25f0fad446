"""Run the ```python blocks of one Markdown page, in order, in one namespace (tests/test_docs.py).

Usage: ``python docs_blocks.py PAGE.md`` from the working directory the blocks should see (the test
gives each page a fresh temporary directory and ``FASTQ_REDIS_URL``). Rules for the blocks:

* a block whose first line is ``# not runnable: <reason>`` is skipped (the reason is required);
* a block whose first line is ``# some/file.py`` (a comment naming a .py file) is also written to
  that file, so later blocks (or the commands of the page) can import it;
* top-level ``await`` is allowed: such a block runs on one event loop kept for the whole page;
* each block must finish within ``BLOCK_TIMEOUT`` seconds, else every thread's traceback is printed
  and the process exits (``faulthandler``).

Prints one line per block (``ran``/``skipped``, with the block's first line) and exits 1 on the
first block that raises, after printing which block it was.
"""
from __future__ import annotations

import ast
import asyncio
import faulthandler
import inspect
import os
import re
import socket
import sys
import traceback
import types
from pathlib import Path

BLOCK_TIMEOUT = float(os.environ.get("DOCS_BLOCK_TIMEOUT", "20"))
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
NOT_RUNNABLE = re.compile(r"^#\s*not runnable\b:?(.*)$")
FILE_NAME = re.compile(r"^#\s*([\w./-]+\.py)\b")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of each top-level ```python fence."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def not_runnable_reason(code: str) -> str | None:
    """The reason after ``# not runnable:`` on the block's first line ('' if none given), else None."""
    first = code.split("\n", 1)[0].strip()
    m = NOT_RUNNABLE.match(first)
    return None if m is None else m.group(1).strip()


def _keep_off_port_6379() -> None:
    """The blocks must use $FASTQ_REDIS_URL, never the machine's own Redis: a connection to port 6379
    on this host fails (a block that names such a URL must be marked not runnable)."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        if (isinstance(address, tuple) and len(address) >= 2 and address[1] == 6379
                and str(address[0]) in ("127.0.0.1", "localhost", "::1", "0.0.0.0")):
            raise ConnectionRefusedError("docs blocks must not use the Redis on port 6379; use $FASTQ_REDIS_URL")
        real_connect(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]


def main(page: str) -> int:
    _keep_off_port_6379()
    sys.path.insert(0, os.getcwd())
    text = Path(page).read_text(encoding="utf-8")
    # The blocks' namespace is a real __main__ module, so that classes they define resolve their
    # annotations (dataclasses, typing.get_type_hints) and pickling finds them.
    module = types.ModuleType("__main__")
    module.__file__ = os.path.join(os.getcwd(), "docs_block.py")
    sys.modules["__main__"] = module
    namespace = module.__dict__
    loop = asyncio.new_event_loop()
    for line, code in python_blocks(text):
        first = code.split("\n", 1)[0].strip()
        if not_runnable_reason(code) is not None:
            print(f"skipped {page}:{line}: {first}", flush=True)
            continue
        name = FILE_NAME.match(first)
        if name is not None:
            target = Path(name.group(1))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code, encoding="utf-8")
        faulthandler.dump_traceback_later(BLOCK_TIMEOUT, exit=True)
        try:
            compiled = compile(code, f"{page}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            if compiled.co_flags & inspect.CO_COROUTINE:
                loop.run_until_complete(eval(compiled, namespace))
            else:
                exec(compiled, namespace)
        except BaseException:
            traceback.print_exc()
            print(f"FAILED {page}:{line}: {first}", file=sys.stderr, flush=True)
            return 1
        finally:
            faulthandler.cancel_dump_traceback_later()
        print(f"ran {page}:{line}: {first}", flush=True)
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
