"""The champion and the challenger side by side, with the decision, in the challenger's evaluation report."""

from __future__ import annotations

import html
from pathlib import Path

from shared.mltable_io import class_sort_key
from shared.promotion import ClassGuard, PromotionRecord


def append_comparison(report: Path, record: PromotionRecord) -> None:
    """Add the champion and the challenger, per class, with the decision, to the challenger's report."""
    classes = sorted(set(record.challenger_per_class) | set(record.champion_per_class), key=class_sort_key)
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{record.champion_per_class.get(c, float('nan')):.3f}</td>"
        f"<td>{record.challenger_per_class.get(c, float('nan')):.3f}</td>"
        f"<td>{record.challenger_per_class.get(c, 0) - record.champion_per_class.get(c, 0):+.3f}</td></tr>"
        for c in classes
    )
    section = (
        f'<h2 id="champion-challenger">Champion (version {html.escape(str(record.champion_version))}) and '
        f"challenger (version {html.escape(record.challenger_version)})</h2>"
        f"<p><b>{'promoted' if record.promoted else 'the champion stays'}</b>: {html.escape(record.reason)}</p>"
        f"<p>{html.escape(record.comparison.describe())}</p>"
        f"<table><tr><th>class</th><th>champion AP@0.5</th><th>challenger AP@0.5</th>"
        f"<th>difference</th></tr>{rows}</table>"
    )
    if record.comparison.class_guard is not None:
        section += class_guard_chart(record.comparison.class_guard)
    text = report.read_text(encoding="utf-8")
    if 'id="champion-challenger"' not in text:
        report.write_text(text.replace("</body>", section + "</body>"), encoding="utf-8")


def class_guard_chart(guard: ClassGuard) -> str:
    """Each class's AP@0.5 change as a bar with its interval, and the guard's line at -max_drop (inline SVG)."""
    rows, width, left, row_height = guard.classes, 640, 190, 22
    height = 30 + row_height * len(rows)

    def x(value: float) -> float:  # -1 .. +1 across the plot
        return left + (value + 1.0) / 2.0 * (width - left - 20)

    fallen_classes = {c.class_id for c in guard.regressions()}
    bars = []
    for index, c in enumerate(rows):
        y = 20 + index * row_height
        fallen = c.class_id in fallen_classes
        colour = "#c0392b" if fallen else ("#7f8c8d" if c.instances < guard.min_instances else "#2e86c1")
        start, end = sorted((x(0.0), x(c.interval.difference)))
        bars.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12">{html.escape(c.label())} '
            f"({c.instances})</text>"
            f'<rect x="{start:.1f}" y="{y + 4}" width="{max(end - start, 1):.1f}" height="12" fill="{colour}"/>'
            f'<line x1="{x(c.interval.low):.1f}" x2="{x(c.interval.high):.1f}" y1="{y + 10}" y2="{y + 10}" '
            'stroke="#222" stroke-width="1.5"/>'
        )
    guard_x = x(-guard.max_drop)
    return (
        f"<h3>Per class: challenger minus champion AP@0.5</h3><p>Bars: the change; lines: its "
        f"{guard.confidence:.1%} interval (adjusted for the classes watched); red: a watched class that fell by more "
        f"than {guard.max_drop:g} beyond doubt; grey: fewer than {guard.min_instances} symbols on the holdout, not "
        f'watched; the dashed line: the guard at -{guard.max_drop:g}.</p><svg xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" role="img" aria-label="per-class AP change">'
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="10" y2="{height - 5}" stroke="#999"/>'
        f'<line x1="{guard_x:.1f}" x2="{guard_x:.1f}" y1="10" y2="{height - 5}" stroke="#c0392b" '
        f'stroke-dasharray="4 3" class="guard-line"/>{"".join(bars)}</svg>'
    )
