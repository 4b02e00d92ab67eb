"""The status page: what an operator sees, rendered by the real page code and checked in headless Chromium."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retrainer.champion.record import BestModel
from retrainer.ledger import Ledger
from retrainer.serving.rollout import ServingStatus
from retrainer.settings import load_settings
from retrainer.status_page import StatusSnapshot, render_status_page
from retrainer.status_view import StatusView
from shared.promotion import (
    Comparison,
    DifferenceInterval,
    HoldoutInfo,
    PromotionRecord,
    decide_promotion,
)
from shared.records import RunRecord, RunState
from tests.browser import console_errors, render
from tests.fakes import InMemoryDatastore, InMemoryTableService
from tests.helpers import class_guard

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
NAMES = {"1": "Instrument/Valve/Gate valve", "2": "Instrument/Valve/Globe valve", "3": "Piping/Fitting/Reducer"}


def decision(version: int, score: float, promoted: bool, previous: float | None) -> PromotionRecord:
    difference = score - (previous or 0)
    interval = DifferenceInterval(
        difference=difference, low=difference - 0.05, high=difference + 0.05, confidence=0.95, resamples=1000
    )
    return PromotionRecord(
        comparison=Comparison(holdout=HoldoutInfo(assignment_version=2, images=40, digest="ab12"), interval=interval),
        name="pid-symbol-detector",
        challenger_version=str(version),
        champion_version=str(version - 1) if version > 1 else None,
        chosen_version=str(version if promoted else version - 1),
        best_version=str(version if promoted else version - 1),
        promoted=promoted,
        challenger_score=score,
        champion_score=previous,
        reason=decide_promotion(score, previous, 0.0, interval).reason,
        challenger_per_class={"1": round(score, 2), "2": round(score - 0.1, 2), "3": 0.99},
        champion_per_class={"1": 0.7, "2": 0.6, "3": 0.95} if previous else {},
    )


def snapshot(run_count: int = 6) -> StatusSnapshot:
    runs = []
    for index in range(run_count):
        submitted = NOW - timedelta(hours=3 * (run_count - index))
        state = [RunState.COMPLETED, RunState.COMPLETED, RunState.FAILED, RunState.CANCELED][index % 4]
        promoted = index % 2 == 0
        run_decision = decision(index + 1, 0.7 + 0.04 * (index % 7), promoted, 0.7) if state == "completed" else None
        runs.append(
            RunRecord(
                run_id=f"run-{index:03d}",
                trigger="timer",
                reason="40 new images",
                image_count=40,
                state=state,
                submitted_at=submitted,
                history=[{"state": RunState.QUEUED, "at": submitted.isoformat()}],
                error="AutoML ran out of quota" if state == "failed" else "",
                decision=run_decision,
                ended_at=submitted + timedelta(minutes=95),
            )
        )
    active = RunRecord(
        "run-active",
        "manual",
        "operator",
        12,
        RunState.RUNNING,
        NOW - timedelta(minutes=42),
        [{"state": RunState.RUNNING, "at": NOW.isoformat(), "detail": "train"}],
        deadline=NOW + timedelta(hours=11),
    )
    runs = [active, *reversed(runs)]
    return StatusSnapshot(
        generated_at=NOW,
        paused=True,
        paused_reason="backing off after a failed run until 2026-11-29T12:30:00+00:00",
        pending_images=17,
        oldest_pending=NOW - timedelta(minutes=75),
        runs=runs,
        best=BestModel(name="pid-symbol-detector", version="5", score=0.86, run="run-004", time=NOW.isoformat()),
        report_links={"run-000": "file:///tmp/report.html"},
        class_names=NAMES,
    )


def test_the_page_shows_state_runs_history_and_per_class_ap_without_outside_resources() -> None:
    page = render_status_page(snapshot())
    assert "<script" not in page and not re.search(r"""(src|href)=["']?https?://""", page.replace("ml.azure", ""))
    assert "17</b> pending images, the oldest waiting 1h 15m" in page
    assert "backing off" in page and "run-active" in page and "step <b>train</b>" in page
    assert page.count("<tr><td><code>run-") == 7
    assert page.count("<circle") == 4, "one point per completed run's registered version"
    assert "Gate valve" in page and "the black tick is the champion" in page
    assert "the black tick is the champion it replaced (version " in page, "the best model is the champion now"
    assert 'href="file:///tmp/report.html"' in page
    assert "+0.040 (95% interval -0.010 to +0.090)" in page and "not enough evidence, the champion stays" in page


def test_an_empty_service_renders_too() -> None:
    empty = StatusSnapshot(NOW, False, "", 0, None, [], None)
    page = render_status_page(empty)
    assert "no runs yet" in page and "no model registered yet" in page and "no model promoted yet" in page


@pytest.mark.slow  # starts Chromium
def test_the_page_renders_in_chromium_with_every_element_and_no_console_error(tmp_path: Path) -> None:
    page = tmp_path / "status.html"
    page.write_text(render_status_page(snapshot(40)))
    rendered = render(page, "status-page.png")
    for element in ('id="runs"', 'id="history"', 'id="per-class"', 'id="submission"', 'id="active"'):
        assert element in rendered.dom, element
    assert rendered.dom.count("<circle") == 20
    assert console_errors(rendered.console) == []
    assert rendered.screenshot.stat().st_size > 20_000, "a real, non-blank screenshot"


def test_the_view_reads_what_the_page_shows_from_the_ledger_and_the_datastore(monkeypatch: pytest.MonkeyPatch) -> None:
    """No service in between: runs, pending images, the hold after a failure, the best model and the names."""
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", "data")
    monkeypatch.setenv("RETRAIN_BACKOFF_MINUTES", "15")
    ledger, store = Ledger(InMemoryTableService(), "t"), InMemoryDatastore()
    ledger.images.record("data/images/a.jpg", "0x1", NOW - timedelta(minutes=75))
    ledger.images.record("data/images/b.jpg", "0x1", NOW - timedelta(minutes=5))
    ledger.runs.save(RunRecord("run-1", "timer", "two images", 2, RunState.FAILED, NOW - timedelta(hours=2)))
    ledger.slot.release("run-1", failed=True, when=NOW - timedelta(minutes=5))
    best = BestModel(name="pid-symbol-detector", version="5", score=0.86, run="run-0", time=NOW.isoformat())
    store.write_json("models/best_model.json", best.model_dump())
    store.write("data/label_map.json", json.dumps(NAMES).encode())
    snapshot = StatusView(ledger, store, load_settings(), clock=lambda: NOW).snapshot()
    assert snapshot.generated_at == NOW and [run.run_id for run in snapshot.runs] == ["run-1"]
    assert (snapshot.pending_images, snapshot.oldest_pending) == (2, NOW - timedelta(minutes=75))
    assert (
        snapshot.paused and snapshot.paused_reason == "backing off after a failed run until 2026-11-29T12:10:00+00:00"
    )
    assert snapshot.best == best and snapshot.class_names == NAMES


def guarded_snapshot() -> StatusSnapshot:
    """A champion rolled back and pinned by the operator, and a run whose challenger lost a class."""
    from retrainer.ledger.champion import ChampionChange, ChangeKind
    from shared.promotion import ClassComparison, ClassGuard

    def compared(class_id: str, before: float, after: float, low: float, high: float, count: int) -> ClassComparison:
        interval = DifferenceInterval(difference=after - before, low=low, high=high, confidence=0.983, resamples=500)
        return ClassComparison(
            class_id=class_id, instances=count, champion_ap=before, challenger_ap=after, interval=interval
        )

    guard = ClassGuard(
        min_instances=20,
        max_drop=0.1,
        confidence=0.983,
        classes=[
            compared("1", 0.70, 0.95, 0.10, 0.40, 31),
            compared("2", 0.60, 0.62, -0.05, 0.09, 25),
            compared("3", 0.41, 0.05, -0.50, -0.20, 22),
            compared("4", 0.50, 0.20, -0.60, 0.10, 4),
        ],
    )
    base = snapshot()
    kept = decision(7, 0.86, False, 0.80)
    kept.comparison.class_guard = guard
    kept.reason = guard.verdict(decide_promotion(0.86, 0.80, 0.0, kept.comparison.interval)).reason
    run = RunRecord("run-guard", "timer", "40 new images", 40, RunState.COMPLETED, NOW - timedelta(hours=1))
    run.decision, run.ended_at = kept, NOW - timedelta(minutes=10)
    promoted = ChampionChange(
        NOW - timedelta(days=2),
        ChangeKind.PROMOTED,
        "pid-symbol-detector",
        "4",
        "5",
        "service",
        "service",
        "better",
        "both scored on the holdout",
        0.86,
        "run-004",
        id="20261127T120000Z-a1b2c3",
    )
    rollback = ChampionChange(
        NOW - timedelta(hours=5),
        ChangeKind.ROLLED_BACK,
        "pid-symbol-detector",
        "5",
        "4",
        "operator",
        "ana (retrain)",
        "version 5 misses gate valves",
        "undoes 20261127T120000Z-a1b2c3",
        0.80,
        "run-003",
        undoes="20261127T120000Z-a1b2c3",
        id="20261129T070000Z-d4e5f6",
    )
    pinned = ChampionChange(
        NOW - timedelta(hours=4),
        ChangeKind.PINNED,
        "pid-symbol-detector",
        "4",
        "4",
        "operator",
        "ana (retrain)",
        "plant audit until Friday",
        id="20261129T080000Z-0a0b0c",
    )
    best = BestModel(
        name="pid-symbol-detector",
        version="4",
        score=0.80,
        run="run-003",
        time=NOW.isoformat(),
        decided_by="operator",
        reason="version 5 misses gate valves",
        pinned_reason="plant audit until Friday",
        pinned_by="ana (retrain)",
        pinned_at="2026-11-29T08:00:00+00:00",
    )
    return StatusSnapshot(
        **{**base.__dict__, "runs": [run, *base.runs], "best": best, "history": [pinned, rollback, promoted]}
    )


def test_the_page_shows_the_pin_the_class_guard_and_the_champion_history() -> None:
    page = render_status_page(guarded_snapshot())
    assert 'id="pin"' in page and "plant audit until Friday" in page and "pinned</b>" in page
    assert "chosen by the operator: version 5 misses gate valves" in page
    assert "Per-class guard (run <code>run-guard</code>: challenger version 7 against version 6)" in page
    assert "3 of 4 classes watched" in page and "fell: Reducer (the champion stays)" in page
    assert page.count('class="fell"') == 1 and page.count('class="unwatched"') == 1
    assert "Reducer (22)" in page, "names from the label map"
    assert page.count("<tr><td>2026-") == 3 and "undoes <code>20261127T120000Z-a1b2c3</code>" in page
    assert "rolled back" in page and "ana (retrain)" in page


@pytest.mark.slow  # starts Chromium
def test_the_pin_guard_and_history_render_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "status.html"
    page.write_text(render_status_page(guarded_snapshot()))
    rendered = render(page, "status-page-operator.png")
    for element in ('id="pin"', 'id="class-guard-chart"', 'class="guard-line"', 'id="champion-history"'):
        assert element in rendered.dom, element
    assert console_errors(rendered.console) == []
    assert rendered.screenshot.stat().st_size > 20_000


def test_the_view_reads_the_champions_history_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from retrainer.ledger.champion import ChampionChange, ChangeKind

    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", "data")
    ledger, store = Ledger(InMemoryTableService(), "t"), InMemoryDatastore()
    for hours, kind in ((3, ChangeKind.PROMOTED), (2, ChangeKind.ROLLED_BACK), (1, ChangeKind.PINNED)):
        ledger.champion.record(
            ChampionChange(NOW - timedelta(hours=hours), kind, "pid-symbol-detector", "1", "2", "operator", "ana", "x")
        )
    view = StatusView(ledger, store, load_settings(), clock=lambda: NOW).snapshot()
    assert [c.kind for c in view.history] == [ChangeKind.PINNED, ChangeKind.ROLLED_BACK, ChangeKind.PROMOTED]


def non_finite_snapshot() -> StatusSnapshot:
    """The guarded page with runs whose figures hold NaN and infinities (a challenger that could not be scored,
    a class with no symbols on either side), and the champion's own per-class figures among them."""
    nan, inf = float("nan"), float("inf")
    base = guarded_snapshot()
    guarded = next(run for run in base.runs if run.run_id == "run-guard")
    guard = class_guard(guarded.decision)
    odd = guard.classes[0].model_copy(update={"class_id": "5", "champion_ap": inf, "challenger_ap": nan})
    odd.interval = odd.interval.model_copy(update={"difference": nan, "low": -inf, "high": inf})
    guard.classes.append(odd)
    runs = []
    for index, score in enumerate((nan, inf, -inf)):
        run = RunRecord(f"run-odd-{index}", "timer", "x", 3, RunState.COMPLETED, NOW - timedelta(minutes=30 - index))
        run.decision, run.ended_at = decision(20 + index, score, index == 0, 0.8), NOW - timedelta(minutes=5)
        runs.append(run)
    champion = runs[0].decision
    assert champion is not None and base.best is not None
    champion.challenger_per_class = {"1": nan, "2": inf, "3": 0.5}
    champion.champion_per_class = {"1": -inf, "2": nan, "3": 0.4}
    best = base.best.model_copy(update={"version": "20", "score": nan})
    return StatusSnapshot(**{**base.__dict__, "runs": [*runs, *base.runs], "best": best})


#: Every attribute of the page's SVG that holds a coordinate or a length.
_GEOMETRY = re.compile(r'\s(cx|cy|r|x|y|x1|x2|y1|y2|width|height)="([^"]*)"')


def test_the_page_draws_no_coordinate_that_is_not_a_number() -> None:
    import math

    page = render_status_page(non_finite_snapshot())
    numbers = [value for _, value in _GEOMETRY.findall(page)]
    numbers += re.findall(r"[-+]?[\d.]+|nan|inf", " ".join(re.findall(r'\sd="([^"]*)"', page)), re.IGNORECASE)
    assert numbers and all(math.isfinite(float(value)) for value in numbers), sorted(
        {value for value in numbers if not math.isfinite(float(value))}
    )
    assert page.count("<circle") == 5, "the versions with a finite score, drawn"
    assert "3 versions without a finite score are not drawn" in page


@pytest.mark.slow  # starts Chromium
def test_a_page_of_non_finite_figures_renders_in_chromium_without_a_console_error(tmp_path: Path) -> None:
    path = tmp_path / "status.html"
    path.write_text(render_status_page(non_finite_snapshot()))
    assert console_errors(render(path, "status-page-non-finite.png").console) == []


def test_the_guard_says_how_many_classes_the_ledgers_copy_left_out() -> None:
    base = guarded_snapshot()
    guarded = next(run for run in base.runs if run.run_id == "run-guard")
    class_guard(guarded.decision).classes_left_out = 4850
    page = render_status_page(base)
    assert "4850 more that changed least are left out of the ledger's copy" in page


def failed_rollout() -> ServingStatus:
    """Version 5 serves on Azure ML; version 6's deployment failed its smoke test and waits for its back-off."""
    from retrainer.serving.rollout import SmokeResult

    smoke = SmokeResult(sheets=3, map50=0.12, expected=0.86, tolerance=0.25, passed=False, message="mAP@0.5 0.120")
    return ServingStatus(
        backend="azureml",
        endpoint="pid-champion",
        url="https://pid-champion.westeurope.inference.ml.azure.com/score",
        version="5",
        state="failed",
        since=(NOW - timedelta(days=2)).isoformat(),
        target="6",
        deployment="model-v6",
        previous="model-v4",
        message="the smoke test of model-v6 failed: mAP@0.5 0.120 <below>; version 5 still answers; retrying after "
        "2026-11-29T12:15 UTC",
        failures=1,
        retry_at=(NOW + timedelta(minutes=15)).isoformat(),
        smoke=smoke,
    )


def serving_page() -> str:
    return render_status_page(StatusSnapshot(**{**snapshot().__dict__, "serving": failed_rollout()}))


def test_the_page_says_which_version_serves_and_a_failed_rollout_stands_out() -> None:
    page = serving_page()
    serving = page[page.index('<section id="serving"') : page.index("</section>", page.index('id="serving"'))]
    assert 'class="pin"' in serving, "a failed rollout is set apart"
    assert "azureml endpoint <b>pid-champion</b>" in serving and "version <b>5</b> answers requests since" in serving
    assert "version 5 still answers" in serving and "&lt;below&gt;" in serving, "the rollout's message, escaped"
    quiet = render_status_page(StatusSnapshot(NOW, False, "", 0, None, [], None))
    assert "no endpoint serves the champion" in quiet


@pytest.mark.slow  # starts Chromium
def test_the_serving_section_renders_in_chromium(tmp_path: Path) -> None:
    file = tmp_path / "status.html"
    file.write_text(serving_page())
    rendered = render(file, "status-page-serving.png")
    assert 'id="serving"' in rendered.dom and 'id="rollout"' in rendered.dom
    assert console_errors(rendered.console) == []


def test_the_view_reads_what_serves_the_champion_from_its_status_blob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", "data")
    ledger, store = Ledger(InMemoryTableService(), "t"), InMemoryDatastore()
    view = StatusView(ledger, store, load_settings(), clock=lambda: NOW)
    assert view.snapshot().serving is None
    store.write_json("models/serving.json", failed_rollout().model_dump(mode="json"))
    assert view.snapshot().serving == failed_rollout()
