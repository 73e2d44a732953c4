"""Inline SVG bar charts for the summary page: no JavaScript, no styles (the CSP allows neither inline).

Every text that reaches the SVG is escaped; colours are presentation attributes, not `style`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = (
    "#1f77b4", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
)  # fmt: skip
OTHER = "#c7c7c7"
WIDTH, HEIGHT = 760, 250
LEFT, RIGHT, TOP, BOTTOM = 44, 560, 12, 210  # the plot area; the legend sits right of it
MAX_BAR = 48.0  # px: one or two days still look like bars
MAX_SERIES = len(PALETTE)  # beyond it, the smallest series are summed as "other"


def nice_ceiling(value: int) -> int:
    """The axis maximum: 1, 2, 4, 6 or 8 times a power of ten, at least `value` (even: whole mid tick)."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 4, 6, 8):
        if step * power >= value:
            return step * power
    return 10 * power


def _series(per_day: Mapping[dt.date, Mapping[str, int]], other: str) -> list[str]:
    totals: dict[str, int] = {}
    for counts in per_day.values():
        for name, n in counts.items():
            totals[name] = totals.get(name, 0) + n
    ordered = sorted(totals, key=lambda name: (-totals[name], name))
    if len(ordered) > MAX_SERIES:
        return [*ordered[: MAX_SERIES - 1], other]
    return ordered


def stacked_bars(
    days: Sequence[dt.date], per_day: Mapping[dt.date, Mapping[str, int]], *, title: str, other: str = "other"
) -> Markup:
    """One bar per day, stacked by series (reason or campaign), with a y axis and a legend."""
    names = _series(per_day, other)
    shown = set(names) - {other}
    if other in names:
        per_day = {
            day: {
                **{k: v for k, v in counts.items() if k in shown},
                other: sum(v for k, v in counts.items() if k not in shown),
            }
            for day, counts in per_day.items()
        }
    colours = {name: (OTHER if name == other and other not in shown else PALETTE[i]) for i, name in enumerate(names)}
    peak = max((sum(per_day.get(day, {}).values()) for day in days), default=0)
    top = nice_ceiling(peak)
    plot_h = BOTTOM - TOP
    slot = (RIGHT - LEFT) / max(len(days), 1)
    bar = min(max(slot * 0.7, 1.0), MAX_BAR)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}" stroke="#555" stroke-width="1"/>',
    ]
    for fraction in (0.0, 0.5, 1.0) if top > 1 else (0.0, 1.0):
        y = BOTTOM - plot_h * fraction
        label = round(top * fraction)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}" stroke="#ddd" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{label}</text>')
    every = max(1, math.ceil(len(days) / 10))
    for i, day in enumerate(days):
        x = LEFT + slot * i + (slot - bar) / 2
        y = float(BOTTOM)
        counts = per_day.get(day, {})
        for name in names:
            n = counts.get(name, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            tip = escape(f"{day.isoformat()}: {name} {n}")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colours[name]}">'
                f"<title>{tip}</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{BOTTOM + 16}" text-anchor="middle" font-size="11">{day:%d-%m}</text>'
            )
    for i, name in enumerate(names):
        y = TOP + 6 + i * 20
        parts.append(f'<rect x="{RIGHT + 24}" y="{y}" width="12" height="12" fill="{colours[name]}"/>')
        parts.append(f'<text x="{RIGHT + 42}" y="{y + 11}" font-size="12">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text above is escaped)
