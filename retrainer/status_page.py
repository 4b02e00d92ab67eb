"""The operator's status page: one self-contained HTML page (inline SVG, no script, no CDN).

Pure: `render_status_page(snapshot)` turns what the ledger knows into HTML. The function app serves
it at GET /api/status; the local demo writes the same page to a file.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from retrainer.champion.record import BestModel
from shared.promotion import ClassComparison, ClassGuard, PromotionRecord
from shared.records import RunRecord, RunState, UnreadableRun

if TYPE_CHECKING:
    from retrainer.ledger.champion import ChampionChange
    from retrainer.serving.rollout import ServingStatus

_STATE_COLOURS = {
    RunState.QUEUED: "#6b7280",
    RunState.RUNNING: "#2563eb",
    RunState.COMPLETED: "#15803d",
    RunState.FAILED: "#b91c1c",
    RunState.CANCELED: "#a16207",
}
_UNKNOWN_COLOUR = "#7c3aed"


@dataclass(frozen=True)
class StatusSnapshot:
    generated_at: datetime
    paused: bool
    paused_reason: str
    pending_images: int
    oldest_pending: datetime | None
    runs: list[RunRecord]  # newest first
    best: BestModel | None
    #: run id -> where its evaluation report is (a file:// URL locally, the Azure ML studio page in Azure)
    report_links: dict[str, str] = field(default_factory=dict)
    #: class id -> name, from the label map
    class_names: dict[str, str] = field(default_factory=dict)
    #: The champion's latest changes (promotions, rollbacks, pins), newest first.
    history: list[ChampionChange] = field(default_factory=list)
    #: Runs among the latest whose rows this release cannot read (a state a newer release wrote), newest first.
    unreadable_runs: list[UnreadableRun] = field(default_factory=list)
    #: What serves the champion (None: no endpoint ever did).
    serving: ServingStatus | None = None


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _ap_length(value: float) -> float:
    """An AP as a bar's share of its scale: 0 to 1, and 0 for a figure that is not a finite number (a record may
    hold NaN or infinity: a chart never draws those as coordinates, its text says them)."""
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


def _duration(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def _state(state: RunState) -> str:
    return f'<span class="state" style="background:{_STATE_COLOURS[state]}">{_e(state.value)}</span>'


def _submission(snapshot: StatusSnapshot) -> str:
    if snapshot.paused:
        status = f'<span class="warn">held back</span>: {_e(snapshot.paused_reason)}'
    else:
        status = '<span class="ok">active</span>: a batch is submitted as soon as it is due'
    oldest = (
        f", the oldest waiting {_duration(snapshot.generated_at - snapshot.oldest_pending)}"
        if snapshot.oldest_pending
        else ""
    )
    return (
        f'<section id="submission"><h2>Automatic submission</h2><p>{status}</p>'
        f'<p id="pending"><b>{snapshot.pending_images}</b> pending images{oldest}</p></section>'
    )


def _active(snapshot: StatusSnapshot) -> str:
    active = [run for run in snapshot.runs if not run.state.terminal]
    if not active:
        return '<section id="active"><h2>Active run</h2><p>none</p></section>'
    rows = []
    for run in active:
        step = run.history[-1].get("detail", "") if run.history else ""
        deadline = f", deadline {run.deadline:%Y-%m-%d %H:%M} UTC" if run.deadline else ""
        rows.append(
            f"<li><code>{_e(run.run_id)}</code> {_state(run.state)} step <b>{_e(step or '-')}</b>, "
            f"running {_duration(snapshot.generated_at - run.submitted_at)}{_e(deadline)}</li>"
        )
    return f'<section id="active"><h2>Active run</h2><ul>{"".join(rows)}</ul></section>'


def _runs_table(snapshot: StatusSnapshot, limit: int = 30) -> str:
    rows = []
    for run in snapshot.runs[:limit]:
        ended = run.ended_at or snapshot.generated_at
        decision = run.decision
        score = f"{decision.challenger_score:.3f}" if decision else ""
        interval = decision.comparison.interval if decision else None
        difference = interval.words() if interval else ""
        verdict = ("promoted" if decision.promoted else "kept the best") if decision else ""
        why = decision.reason if decision else (run.error or "")
        link = snapshot.report_links.get(run.run_id)
        report = f'<a href="{_e(link)}">report</a>' if link else ""
        rows.append(
            "<tr>"
            f"<td><code>{_e(run.run_id)}</code></td><td>{_e(run.trigger)}</td><td>{run.image_count}</td>"
            f"<td>{_state(run.state)}</td><td>{_duration(ended - run.submitted_at)}</td><td>{score}</td>"
            f"<td class='difference'>{_e(difference)}</td>"
            f"<td>{_e(verdict)}</td><td class='why'>{_e(why[:300])}</td><td>{report}</td>"
            "</tr>"
        )
    header = "".join(
        f"<th>{name}</th>"
        for name in (
            "run",
            "trigger",
            "images",
            "state",
            "duration",
            "holdout mAP@0.5",
            "challenger - champion",
            "decision",
            "reason",
            "",
        )
    )
    body = "".join(rows) or '<tr><td colspan="10">no runs yet</td></tr>'
    shown = f" (the latest {limit})" if len(snapshot.runs) > limit else ""
    return (
        f'<section><h2>Recent runs{shown}</h2><table id="runs"><thead><tr>{header}</tr></thead>'
        f"<tbody>{body}</tbody></table></section>"
    )


def _unreadable_runs(snapshot: StatusSnapshot) -> str:
    if not snapshot.unreadable_runs:
        return ""
    rows = "".join(
        f'<li><code>{_e(run.run_id)}</code> <span class="state" style="background:{_UNKNOWN_COLOUR}">unknown</span> '
        f"stored as <b>{_e(run.stored_state or '-')}</b>: {_e(run.problem)}</li>"
        for run in snapshot.unreadable_runs
    )
    return (
        '<section id="unreadable-runs"><h2>Runs this release cannot read</h2>'
        f"<p>Not followed, promoted, canceled or changed here; a slot one holds stays taken.</p><ul>{rows}</ul>"
        "</section>"
    )


def _history_chart(snapshot: StatusSnapshot, width: int = 640, height: int = 220) -> str:
    """mAP@0.5 of every registered version, oldest first; promoted versions are filled."""
    registered = [
        (run.ended_at or run.submitted_at, run.decision)
        for run in reversed(snapshot.runs)
        if run.decision is not None and run.state == RunState.COMPLETED
    ]
    if not registered:
        return '<section><h2>Model history</h2><p id="history">no model registered yet</p></section>'
    points = [(when, decision) for when, decision in registered if math.isfinite(decision.challenger_score)]
    undrawn = len(registered) - len(points)
    unscored = (
        f'<p class="legend">{undrawn} version{"s" if undrawn > 1 else ""} without a finite score '
        f"{'are' if undrawn > 1 else 'is'} not drawn</p>"
        if undrawn
        else ""
    )
    if not points:
        nothing = '<p id="history">no registered version has a finite score</p>'
        return f"<section><h2>Model history</h2>{nothing}{unscored}</section>"
    left, right, top, bottom = 48, 16, 16, 36
    scores = [decision.challenger_score for _, decision in points]
    low, high = min(0.0, min(scores)), max(1.0, max(scores))
    span_x = max(len(points) - 1, 1)

    def x(index: int) -> float:
        return left + (width - left - right) * index / span_x

    def y(score: float) -> float:
        return top + (height - top - bottom) * (1 - (score - low) / (high - low))

    path = " ".join(
        f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(d.challenger_score):.1f}" for i, (_, d) in enumerate(points)
    )
    marks = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(d.challenger_score):.1f}" r="5" '
        f'class="{"promoted" if d.promoted else "kept"}"><title>version {_e(d.challenger_version)}: '
        f"{d.challenger_score:.3f}{' (promoted)' if d.promoted else ''} at {when:%Y-%m-%d %H:%M}</title></circle>"
        for i, (when, d) in enumerate(points)
    )
    grid = "".join(
        f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
        f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>'
        for v in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    step = max(1, len(points) // 10)
    labels = "".join(
        f'<text x="{x(i):.1f}" y="{height - 12}" text-anchor="middle">v{_e(d.challenger_version)}</text>'
        for i, (_, d) in enumerate(points)
        if i % step == 0
    )
    svg = (
        f'<svg id="history" role="img" aria-label="mAP@0.5 per registered version" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{grid}<path d="{path}" class="line"/>{marks}{labels}</svg>'
    )
    legend = '<p class="legend"><span class="dot promoted"></span> promoted <span class="dot kept"></span> kept</p>'
    return f"<section><h2>Model history (mAP@0.5 per registered version)</h2>{svg}{legend}{unscored}</section>"


def _per_class_chart(snapshot: StatusSnapshot, width: int = 640) -> str:
    """The champion's per-class AP as its promotion recorded it (after a rollback: the version rolled back to)."""
    best = snapshot.best
    promoted = next(
        (
            run.decision
            for run in snapshot.runs
            if run.decision is not None
            and run.decision.promoted
            and (best is None or run.decision.challenger_version == best.version)
        ),
        None,
    )
    if promoted is None or not promoted.challenger_per_class:
        return '<section><h2>Per-class AP of the best model</h2><p id="per-class">not recorded yet</p></section>'
    current, previous = promoted.challenger_per_class, promoted.champion_per_class or {}
    names = snapshot.class_names
    classes = sorted(current, key=lambda c: (math.isfinite(current[c]), _ap_length(current[c]), c))
    bar_height, label_width, top = 18, 220, 8
    height = top + len(classes) * (bar_height + 6) + 8
    scale = width - label_width - 60
    rows = []
    for index, class_id in enumerate(classes):
        y = top + index * (bar_height + 6)
        name = names.get(class_id, class_id)
        length = scale * _ap_length(current[class_id])
        rows.append(
            f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end">{_e(name[-32:])}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" '
            f'class="current"><title>{_e(name)}: {current[class_id]:.3f}</title></rect>'
            f'<text x="{label_width + length + 4:.1f}" y="{y + 13}">{current[class_id]:.2f}</text>'
        )
        if class_id in previous and math.isfinite(previous[class_id]):
            tick = label_width + scale * _ap_length(previous[class_id])
            rows.append(
                f'<line x1="{tick:.1f}" x2="{tick:.1f}" y1="{y - 2}" y2="{y + bar_height + 2}" '
                f'class="previous"><title>the champion it replaced: {previous[class_id]:.3f}</title></line>'
            )
    svg = (
        f'<svg id="per-class" role="img" aria-label="per-class AP" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(rows)}</svg>'
    )
    caption = (
        f"version {_e(promoted.challenger_version)}; the black tick is the champion it replaced"
        f"{' (version ' + _e(promoted.champion_version) + ')' if promoted.champion_version else ''}"
    )
    return f"<section><h2>Per-class AP@0.5 of the best model</h2>{svg}<p class='legend'>{caption}</p></section>"


def _pin(snapshot: StatusSnapshot) -> str:
    best = snapshot.best
    if best is None or not best.pinned_reason:
        return ""
    by = f" by {_e(best.pinned_by)}" if best.pinned_by else ""
    at = f" at {_e(_when(best.pinned_at))}" if best.pinned_at else ""
    return (
        f'<section id="pin" class="pin"><h2>Pinned</h2><p>Version <b>{_e(best.version)}</b> is pinned{by}{at}: '
        f"<b>{_e(best.pinned_reason)}</b>. Runs still train, score and record their comparison; the champion stays "
        "until it is unpinned (<code>retrain unpin</code>).</p></section>"
    )


_SERVING_COLOURS = {
    "serving": "#15803d",
    "canary": "#2563eb",
    "deploying": "#2563eb",
    "failed": "#b91c1c",
    "none": "#6b7280",
}


def _serving(snapshot: StatusSnapshot) -> str:
    """Which version answers requests, where, since when, and what the rollout is doing (a failure stands out)."""
    status = snapshot.serving
    if status is None:
        return (
            '<section><h2>Serving</h2><p id="serving">no endpoint serves the champion (SERVING_ENDPOINT_NAME on '
            "Azure ML, <code>retrain serve</code> on this machine)</p></section>"
        )
    where = f"{_e(status.backend)} endpoint <b>{_e(status.endpoint)}</b>"
    where += f" (<code>{_e(status.url)}</code>)" if status.url else ""
    answers = "no version answers requests yet"
    if status.version:
        since = f" since {_e(_when(status.since))}" if status.since else ""
        answers = f"version <b>{_e(status.version)}</b> answers requests{since}"
    colour = _SERVING_COLOURS.get(status.state, _UNKNOWN_COLOUR)
    state = f'<span class="state" style="background:{colour}">{_e(status.state)}</span>'
    failed = ' class="pin"' if status.state == "failed" else ""
    return (
        f'<section id="serving"{failed}><h2>Serving</h2><p>{where}: {answers}</p>'
        f'<p id="rollout">{state} {_e(status.message)}</p></section>'
    )


def _when(stamp: str) -> str:
    """An ISO time as the page writes times; as it is when it is not one."""
    try:
        return f"{datetime.fromisoformat(stamp):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return stamp


def _latest_guard(snapshot: StatusSnapshot) -> tuple[RunRecord, PromotionRecord, ClassGuard] | None:
    for run in snapshot.runs:
        if run.decision is not None and run.decision.comparison.class_guard is not None:
            return run, run.decision, run.decision.comparison.class_guard
    return None


def _class_guard(snapshot: StatusSnapshot, width: int = 640) -> str:
    """The latest run's per-class guard: each class's AP@0.5 change with its interval, and the guard line."""
    latest = _latest_guard(snapshot)
    if latest is None:
        return '<section id="class-guard"><h2>Per-class guard</h2><p>no per-class comparison recorded yet</p></section>'
    run, decision, guard = latest

    def order(c: ClassComparison) -> tuple[bool, float, str]:
        """The largest loss first; a class whose figures are not finite numbers last (drawn as text alone)."""
        change = c.challenger_ap - c.champion_ap
        return (False, change, c.class_id) if math.isfinite(change) else (True, 0.0, c.class_id)

    rows = sorted(guard.classes, key=order)
    fallen = guard.regressions()
    left, row_height = 220, 20
    height = 24 + row_height * len(rows)

    def label(c: ClassComparison) -> str:
        return c.name or snapshot.class_names.get(c.class_id, "").rsplit("/", 1)[-1] or f"class {c.class_id}"

    # Symmetric around zero, wide enough for every interval and the guard line.
    ends = [abs(end) for c in rows for end in (c.interval.low, c.interval.high) if math.isfinite(end)]
    reach = min(1.1 * max([guard.max_drop, 0.05, *ends]), 1.0)

    def x(value: float) -> float:  # -reach .. +reach across the plot (an infinite end at its edge)
        return left + (max(-reach, min(reach, value)) + reach) / (2 * reach) * (width - left - 16)

    bars = []
    for index, c in enumerate(rows):
        y = 14 + index * row_height
        kind = "fell" if c in fallen else ("held" if c.instances >= guard.min_instances else "unwatched")
        name = label(c)
        what = f"{_e(name)}: {c.champion_ap:.3f} -&gt; {c.challenger_ap:.3f}, {_e(c.interval.words())}"
        bars.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{_e(name[-30:])} ({c.instances})</text>')
        if not all(math.isfinite(v) for v in (c.interval.difference, c.champion_ap, c.challenger_ap)):
            bars.append(f'<text x="{x(0.0) + 4:.1f}" y="{y + 12}">not a number<title>{what}</title></text>')
            continue
        start, end = sorted((x(0.0), x(c.interval.difference)))
        bars.append(
            f'<rect x="{start:.1f}" y="{y + 3}" width="{max(end - start, 1):.1f}" height="11" class="{kind}">'
            f"<title>{what}</title></rect>"
        )
        if not (math.isnan(c.interval.low) or math.isnan(c.interval.high)):
            bars.append(
                f'<line x1="{x(c.interval.low):.1f}" x2="{x(c.interval.high):.1f}" y1="{y + 8}" y2="{y + 8}" '
                'class="interval"/>'
            )
    guard_x = x(-guard.max_drop)
    svg = (
        f'<svg id="class-guard-chart" role="img" aria-label="per-class AP@0.5 change" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="6" y2="{height - 4}" class="zero"/>'
        f'<line x1="{guard_x:.1f}" x2="{guard_x:.1f}" y1="6" y2="{height - 4}" class="guard-line"/>'
        f"{''.join(bars)}</svg>"
    )
    watched = sum(1 for c in guard.classes if c.instances >= guard.min_instances)
    left_out = (
        f" ({guard.classes_left_out} more that changed least are left out of the ledger's copy; the run's own "
        "record holds them)"
        if guard.classes_left_out
        else ""
    )
    verdict = (
        "fell: " + ", ".join(_e(label(c)) for c in fallen) + " (the champion stays)"
        if fallen
        else "no watched class fell"
    )
    return (
        f'<section id="class-guard"><h2>Per-class guard (run <code>{_e(run.run_id)}</code>: challenger version '
        f"{_e(decision.challenger_version)} against version {_e(decision.champion_version or '-')})</h2>"
        f"<p>{watched} of {len(guard.classes)} classes watched (at least {guard.min_instances} symbols on the "
        f"holdout){left_out}; a watched class may lose at most {guard.max_drop:g} AP@0.5 beyond doubt: "
        f"<b>{verdict}</b>.</p>"
        f"{svg}<p class='legend'>bars: challenger minus champion AP@0.5; lines: its {guard.confidence:.1%} interval "
        "(adjusted for the classes watched); red: fell; grey: too few symbols to watch; dashed: the guard at "
        f"-{guard.max_drop:g}</p></section>"
    )


def _history(snapshot: StatusSnapshot, limit: int = 10) -> str:
    if not snapshot.history:
        return '<section><h2>Champion history</h2><p id="champion-history">no promotion recorded yet</p></section>'
    rows = []
    for change in snapshot.history[:limit]:
        undoes = f"undoes <code>{_e(change.undoes)}</code>" if change.undoes else ""
        moved = f"{_e(change.from_version or '-')} &rarr; {_e(change.to_version or '-')}"
        if change.from_version == change.to_version:  # a pin or an unpin
            moved = f"version {_e(change.to_version or '-')}"
        rows.append(
            "<tr>"
            f"<td>{change.at:%Y-%m-%d %H:%M}</td><td>{_e(change.kind.value)}</td>"
            f"<td>{moved}</td>"
            f"<td>{_e(change.actor or change.decided_by)}</td><td class='why'>{_e(change.reason[:300])}</td>"
            f"<td class='why'>{_e(change.evidence[:300])}</td><td>{undoes}</td><td><code>{_e(change.id)}</code></td>"
            "</tr>"
        )
    header = "".join(f"<th>{name}</th>" for name in ("time", "change", "version", "by", "why", "evidence", "", "id"))
    return (
        f"<section><h2>Champion history (the latest {min(limit, len(snapshot.history))})</h2>"
        f'<table id="champion-history"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        "</section>"
    )


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#111}
h1{margin:0 0 .2em}h2{margin:1.2em 0 .4em;font-size:1.1em}
.sub{color:#555}.ok{color:#15803d;font-weight:600}.warn{color:#b45309;font-weight:600}
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f3f4f6}.why{max-width:28em;color:#374151}
.state{color:#fff;border-radius:4px;padding:1px 6px;font-size:.85em}
svg text{font-size:11px;fill:#374151}.grid{stroke:#e5e7eb}.line{fill:none;stroke:#2563eb;stroke-width:2}
circle.promoted{fill:#15803d}circle.kept{fill:#fff;stroke:#6b7280;stroke-width:2}
rect.current{fill:#60a5fa}line.previous{stroke:#111;stroke-width:2}
.legend{font-size:.85em;color:#555}.dot{display:inline-block;width:10px;height:10px;border-radius:5px}
.dot.promoted{background:#15803d}.dot.kept{border:2px solid #6b7280}
.pin{border-left:4px solid #b45309;background:#fffbeb;padding:.2em 1em}
rect.fell{fill:#b91c1c}rect.held{fill:#2563eb}rect.unwatched{fill:#9ca3af}
line.interval{stroke:#111;stroke-width:1.5}line.zero{stroke:#9ca3af}
line.guard-line{stroke:#b91c1c;stroke-dasharray:4 3}
"""


def render_status_page(snapshot: StatusSnapshot) -> str:
    best = (
        f"best model <b>{_e(snapshot.best.name)}</b> version <b>{_e(snapshot.best.version)}</b>"
        f"{f' (mAP@0.5 {snapshot.best.score:.3f})' if snapshot.best.score is not None else ''}"
        f"{f', chosen by the operator: {_e(snapshot.best.reason)}' if snapshot.best.decided_by == 'operator' else ''}"
        f"{', <b>pinned</b>' if snapshot.best.pinned_reason else ''}"
        if snapshot.best
        else "no model promoted yet"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>P&amp;ID detector retraining: status</title><style>{_STYLE}</style></head><body>"
        "<h1>P&amp;ID detector retraining</h1>"
        f'<p class="sub">{best}; generated {snapshot.generated_at:%Y-%m-%d %H:%M:%S} UTC</p>'
        f"{_pin(snapshot)}{_serving(snapshot)}{_submission(snapshot)}{_active(snapshot)}{_history_chart(snapshot)}"
        f"{_per_class_chart(snapshot)}{_class_guard(snapshot)}{_history(snapshot)}{_unreadable_runs(snapshot)}"
        f"{_runs_table(snapshot)}"
        "</body></html>"
    )
