"""Server-rendered SVG charts (no JavaScript, no inline style: CSP allows them as they are)."""
from __future__ import annotations

from datetime import date
from typing import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 180
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 56, 28, 12
PROCESSED = "#3b82f6"
FAILED = "#ef4444"


def _nice_max(value: int) -> int:
    if value <= 0:
        return 1
    step: int = 10 ** (len(str(value)) - 1)
    for mult in (1, 2, 5, 10):
        if value <= mult * step:
            return mult * step
    return 10 * step  # pragma: no cover


def daily_bars(days: Sequence[tuple[date, int, int]], title: str = "Processed and failed per day (UTC)") -> Markup:
    """Bars of processed (blue) and failed (red) tasks per day, oldest left."""
    if not days:
        return Markup(f'<p class="muted">{escape(title)}: no data yet</p>')
    top = _nice_max(max(max(p, f) for _, p, f in days))
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = plot_w / len(days)
    bar = max(2.0, slot * 0.38)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for frac in (0, 0.5, 1):
        y = PAD_TOP + plot_h * (1 - frac)
        parts.append(f'<line x1="{PAD_LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d1d5db" '
                     f'stroke-width="1"/>')
        parts.append(f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#6b7280">{int(top * frac):,}</text>')
    for i, (day, processed, failed) in enumerate(days):
        x = PAD_LEFT + i * slot + (slot - 2 * bar) / 2
        for j, (value, color, label) in enumerate(((processed, PROCESSED, "processed"), (failed, FAILED, "failed"))):
            h = plot_h * value / top
            parts.append(f'<rect class="bar-{label}" x="{x + j * bar:.1f}" y="{PAD_TOP + plot_h - h:.1f}" '
                         f'width="{bar:.1f}" height="{h:.1f}" fill="{color}"><title>{day.isoformat()}: '
                         f'{value:,} {label}</title></rect>')
        if len(days) <= 16 or i % max(1, len(days) // 8) == 0:
            parts.append(f'<text x="{PAD_LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" '
                         f'font-size="11" fill="#6b7280">{day.strftime("%m-%d")}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
