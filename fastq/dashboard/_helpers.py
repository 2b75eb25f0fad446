"""Small helpers of the dashboard's pages: safe redirect targets, and how times, durations and
payloads are shown."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Literal, Optional, TypedDict
from urllib.parse import urlsplit

from starlette.requests import Request

PREVIEW_BYTES = 4096


class Preview(TypedDict):
    """Bytes as a page shows them: ``text`` to display, ``more`` bytes left out."""

    kind: Literal["json", "text", "hex"]
    text: str
    more: int


def safe_next(value: Optional[str], default: str = "/") -> str:
    """A local path to go back to; anything that could leave the site becomes ``default``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def local_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + ("?" + query if query else "")


def when(value: Optional[datetime]) -> str:
    if value is None:
        return "—"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def preview(data: Optional[bytes]) -> Preview:
    """How to show bytes: pretty JSON, text, or a hex dump, cut to PREVIEW_BYTES."""
    data = data or b""
    cut = data[:PREVIEW_BYTES]
    more = len(data) - len(cut)
    try:
        text = cut.decode("utf-8")
    except UnicodeDecodeError:
        return {"kind": "hex", "text": " ".join(f"{b:02x}" for b in cut[:1024]),
                "more": len(data) - min(len(data), 1024)}
    if not more:
        try:
            return {"kind": "json", "text": json.dumps(json.loads(text), indent=2, ensure_ascii=False), "more": 0}
        except ValueError:
            pass
    return {"kind": "text", "text": text, "more": more}
