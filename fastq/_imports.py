"""Resolve ``module:attribute`` strings given on command lines (APP arguments, hooks)."""
from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import Any

from fastq.errors import AppImportError


def load_object(spec: str, example: str = "myapp.tasks:mux") -> Any:
    """Import ``module:attribute`` (the attribute may be dotted) and return the object.

    The current directory is put on ``sys.path`` (as gunicorn and celery do). Every failure
    becomes one ``AppImportError`` naming the spec and what went wrong.
    """
    if not isinstance(spec, str):
        raise AppImportError(f"APP must be a 'module:attribute' string, not {type(spec).__name__}")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppImportError(f"APP must look like 'module:attribute' (e.g. {example}), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise AppImportError(f"cannot import module {module_name!r} of APP {spec!r}: {exc}") from exc
    except Exception as exc:
        raise AppImportError(f"importing module {module_name!r} of APP {spec!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppImportError(f"module {module_name!r} has no attribute {attr!r} (APP {spec!r})") from None
    return obj
