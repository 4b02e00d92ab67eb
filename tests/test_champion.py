"""The operator's controls: promote and roll back by hand, pin, unpin, and the champion's history.

Every test runs on both registries (the local MLflow one, and Azure ML's client answering with the SDK's own
`Model` entities) and on both storages (in-memory tables and blobs, and Azurite). The tag step is the real
one (`choose_best`), and the service records its runs as it does in production.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline_steps.holdout_scorer import HoldoutScores
from retrainer.champion.authority import ChampionConflict, PromotionRefused, VersionNotFound
from retrainer.datastore import Datastore
from retrainer.ledger.champion import ChangeKind
from retrainer.settings import Settings
from shared.champion.tags import pin_of
from shared.promotion import (
    ClassComparison,
    ClassGuard,
    DifferenceInterval,
    PromotionRecord,
    decide_promotion,
)
from shared.records import BEST_MODEL_TAG, ModelVersion, RunState, RunStatus
from shared.registry import ModelRegistry
from shared.registry.local import LocalModelRegistry
from tests.champion_race import BETTER
from tests.champion_world import NAME, World, registry, world
from tests.fakes import FakeRunner, fake_models
from tests.helpers import Clock, Posted, at_once, listening_server

if TYPE_CHECKING:
    from azure.ai.ml.entities import Model

__all__ = ["registry", "world"]  # the fixtures these tests use


def test_a_rollback_restores_the_earlier_version_with_its_record_its_event_and_names_what_it_undoes(
    world: World,
) -> None:
    first_run, first = world.run(0.60)
    second_run, second = world.run(0.70)
    assert first.promoted and second.promoted and world.best() == ["2"]
    world.published.clear()

    outcome = world.controls.promote("1", "version 2 misses gate valves on scanned sheets", "ana (retrain)")

    assert world.best() == ["1"]
    record = world.record()
    assert record == outcome.record and record is not None
    assert (record.version, record.score, record.run) == ("1", 0.60, first_run), "the record it had when promoted"
    assert record.decided_by == "operator" and record.reason == "version 2 misses gate valves on scanned sheets"
    assert world.published == [record], "ModelPromoted, as for an automatic promotion"
    rollback, undone, earlier = world.controls.history(3)
    assert (undone.kind, undone.from_version, undone.to_version, undone.run_id) == ("promoted", "1", "2", second_run)
    assert rollback == outcome.change
    assert (rollback.kind, rollback.from_version, rollback.to_version) == (ChangeKind.ROLLED_BACK, "2", "1")
    assert rollback.undoes == undone.id and rollback.decided_by == "operator" and rollback.actor == "ana (retrain)"
    assert f"undoes {undone.id}" in rollback.evidence and "trained on the label map's classes" in rollback.evidence
    assert (earlier.kind, earlier.from_version, earlier.to_version, earlier.decided_by) == (
        "promoted",
        None,
        "1",
        "service",
    )
    assert "no model was tagged best yet" in earlier.reason


def test_refused_with_one_line_for_a_missing_version_lost_files_or_another_class_map(world: World) -> None:
    world.run(0.60)
    world.register(0.65)
    world.register(0.66, classes=frozenset({"1", "2", "9"}))
    world.register(0.67)
    world.lose_files("4")
    world.published.clear()
    with pytest.raises(
        VersionNotFound, match=r"^pid-symbol-detector has no version '7' \(the registry holds versions 1 to 4\)$"
    ):
        world.controls.promote("7", "try", "ana")
    with pytest.raises(PromotionRefused, match=r"^version 4 has no model files"):
        world.controls.promote("4", "try", "ana", force=True)
    with pytest.raises(PromotionRefused) as refused:
        world.controls.promote("3", "try", "ana")
    assert str(refused.value) == (
        "version 3 was trained on a class map the service no longer uses (classes added since: 3; gone since: 9): "
        "--force to promote it anyway"
    )
    assert "\n" not in str(refused.value)
    assert world.best() == ["1"] and world.published == [] and len(world.controls.history()) == 1, "nothing moved"

    forced = world.controls.promote("3", "the old map is what the plant uses", "ana", force=True)
    assert world.best() == ["3"] and forced.change is not None and forced.change.kind == ChangeKind.PROMOTED
    assert forced.change.evidence.startswith("forced: was trained on a class map the service no longer uses")


def test_a_pin_holds_across_runs_and_the_history_shows_it_all(world: World) -> None:
    world.run(0.60)
    world.clock.advance(minutes=1)
    pinned = world.controls.pin("plant audit until Friday", "ana (retrain)")
    assert pinned.record is not None and pinned.record.pinned_reason == "plant audit until Friday"
    assert pin_of(next(v for v in world.registry.model_versions(NAME) if v.is_best)) is not None

    for score in (0.80, 0.90):
        _, decision = world.run(score)
        assert not decision.promoted and decision.best_version == "1" and world.best() == ["1"]
        assert decision.reason.startswith("pinned: the champion stays (plant audit until Friday); the comparison: ")
        assert "promoted" in decision.reason, "what the comparison would have done is kept"
    record = world.record()
    assert record is not None and record.version == "1" and record.pinned_reason == "plant audit until Friday"

    world.clock.advance(minutes=1)
    world.controls.unpin("ana (retrain)", "audit done")
    assert world.champion_record().pinned_reason is None
    _, decision = world.run(0.95)
    assert decision.promoted and world.best() == ["4"]
    kinds = [(c.kind.value, c.to_version, c.decided_by) for c in world.controls.history()]
    assert kinds == [
        ("promoted", "4", "service"),
        ("unpinned", "1", "operator"),
        ("pinned", "1", "operator"),
        ("promoted", "1", "service"),
    ]


def test_the_pinned_tag_step_still_scores_and_records_the_comparison(world: World) -> None:
    world.run(0.60)
    world.controls.pin("audit", "ana")
    challenger = world.register(0.61)
    interval = BETTER
    guard = ClassGuard(
        min_instances=1,
        max_drop=0.1,
        confidence=0.95,
        classes=[ClassComparison(class_id="1", instances=30, champion_ap=0.5, challenger_ap=0.7, interval=interval)],
    )

    def scorer(candidate: ModelVersion, incumbent: ModelVersion | None) -> HoldoutScores:
        return HoldoutScores(0.8, {"1": 0.7}, 0.6, {"1": 0.5}, interval, scored_images=40, class_guard=guard)

    decision = world.tag_step(challenger, scorer)
    assert not decision.promoted and world.best() == ["1"]
    assert decision.comparison.interval == interval and decision.comparison.class_guard == guard
    assert decision.reason == (
        "pinned: the champion stays (audit); the comparison: +0.200 (95% interval +0.100 to +0.300): "
        "the challenger is better by more than 0, promoted"
    )


def test_a_promotion_by_hand_carries_the_pin_to_the_new_champion(world: World) -> None:
    world.run(0.60)
    world.register(0.70)
    world.controls.pin("audit", "ana")
    outcome = world.controls.promote("2", "the audit wants version 2", "ana")
    versions = {v.version: v for v in world.registry.model_versions(NAME)}
    assert pin_of(versions["2"]) is not None and pin_of(versions["1"]) is None and world.best() == ["2"]
    assert outcome.record is not None and outcome.record.pinned_reason == "audit"
    _, decision = world.run(0.99)
    assert not decision.promoted and world.best() == ["2"]


def test_pin_is_refused_without_a_champion_and_pins_the_registrys_champion_before_its_run_is_recorded(
    world: World,
) -> None:
    with pytest.raises(ChampionConflict, match="no version of pid-symbol-detector is tagged best"):
        world.controls.pin("audit", "ana")
    world.run(0.60)
    decision = world.tag_step(world.register(0.70))  # the tag step moved the tag; the run is not recorded yet
    pinned = world.controls.pin("audit", "ana")
    assert "pinned pid-symbol-detector version 2" in pinned.message
    assert pinned.record is not None and (pinned.record.version, pinned.record.pinned_reason) == ("2", "audit")
    world.record_run(decision)
    record = world.record()
    assert record is not None and (record.version, record.decided_by, record.pinned_reason) == ("2", "service", "audit")
    assert record.reason == decision.reason, "the run's record brings its reason, and keeps the pin"


def test_a_run_recorded_after_the_operator_rolled_back_does_not_overturn_the_rollback(world: World) -> None:
    world.run(0.60)
    decision = world.tag_step(world.register(0.70))  # promotes 2 in the registry ...
    world.controls.promote("1", "2 is wrong", "ana")  # ... and the operator rolls back before the run is recorded
    world.published.clear()
    run_id = world.record_run(decision)
    record = world.record()
    assert record is not None and record.version == "1" and record.decided_by == "operator"
    assert world.published == [] and world.best() == ["1"]
    automatic = next(c for c in world.controls.history() if c.run_id == run_id)
    assert "replaced since: version 1 is the champion now (operator)" in automatic.evidence


def test_promoting_the_champion_again_changes_nothing_but_completes_a_record_left_behind(world: World) -> None:
    world.run(0.60)
    world.register(0.70)
    world.controls.promote("2", "fix", "ana")
    world.published.clear()
    again = world.controls.promote("2", "fix", "ana")
    assert again.change is None and "already the champion" in again.message and world.published == []
    world.datastore.write("models/best_model.json", b"{damaged")  # e.g. a write that failed half-way
    repaired = world.controls.promote("2", "fix", "ana")
    assert world.record() == repaired.record and repaired.record is not None and len(world.published) == 1
    assert (repaired.record.version, repaired.record.decided_by) == ("2", "operator")


def test_a_retried_automatic_promotion_leaves_one_entry(world: World) -> None:
    run_id, decision = world.run(0.60)
    record = world.ledger.runs.get(run_id)
    assert record is not None
    world.controls.record_run(decision, run_id)  # as a retry after a failed save would
    assert [c.run_id for c in world.controls.history()] == [run_id]


@pytest.mark.parametrize("registry", ["local"], indirect=True)
@pytest.mark.parametrize("storage", ["memory"], indirect=True)
def test_a_promotion_racing_tag_steps_leaves_exactly_one_best_on_the_local_registry(world: World) -> None:
    world.run(0.50)
    challengers = [world.register(score) for score in (0.7, 0.8, 0.9)]
    world.register(0.4)
    actions: list[Callable[[], object]] = [functools.partial(world.tag_step, v) for v in challengers]
    actions.append(lambda: world.controls.promote("5", "rollback", "ana"))
    outcomes = at_once(actions)
    assert not [o for o in outcomes if isinstance(o, BaseException)] and len(world.best()) == 1


@pytest.mark.parametrize("registry", ["azureml"], indirect=True)
@pytest.mark.parametrize("storage", ["memory"], indirect=True)
def test_on_azure_ml_a_tag_step_tagging_another_version_meanwhile_is_repaired_to_the_operators_choice(
    world: World,
) -> None:
    world.run(0.50)
    world.register(0.90)
    world.register(0.30)
    models = fake_models(world.registry)

    def racing_tag_step(model: Model) -> None:  # the moment the operator's tag lands, a tag step tags version 2
        if model.version == "3" and (model.tags or {}).get(BEST_MODEL_TAG) == "true":
            models.before_write = None
            world.registry.set_model_tags(NAME, "2", {BEST_MODEL_TAG: "true"})

    models.before_write = racing_tag_step
    world.controls.promote("3", "rollback", "ana")
    assert world.best() == ["3"]


@pytest.mark.parametrize("registry", ["azureml"], indirect=True)
@pytest.mark.parametrize("storage", ["memory"], indirect=True)
def test_on_azure_ml_a_tag_step_that_took_the_tag_back_loses_to_the_operator(world: World) -> None:
    world.run(0.50)
    world.register(0.90)
    world.register(0.30)
    models = fake_models(world.registry)

    def racing_tag_step(model: Model) -> None:  # the operator's tag landed; a racing tag step's repair untags it
        if model.version == "3" and (model.tags or {}).get(BEST_MODEL_TAG) == "true":
            models.after_write = None
            world.registry.set_model_tags(NAME, "2", {BEST_MODEL_TAG: "true"})
            world.registry.set_model_tags(NAME, "3", {BEST_MODEL_TAG: "false"})

    models.after_write = racing_tag_step
    outcome = world.controls.promote("3", "rollback", "ana")
    assert world.best() == ["3"], "the operator's choice is written again over the run's"
    assert outcome.record is not None and world.record() == outcome.record and outcome.record.version == "3"


# --- the command and the HTTP API, through the composition root, on Azurite and the local registry -------------


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Posted]]:
    """A local Event Grid topic: the posts the real publisher sends to EVENTGRID_TOPIC_ENDPOINT (ask for it before
    `deployed`, which reads the settings)."""
    with listening_server() as (url, posted):
        monkeypatch.setenv("EVENTGRID_TOPIC_ENDPOINT", f"{url}/api/events")
        monkeypatch.setenv("EVENTGRID_TOPIC_KEY", "topic-key")
        yield posted


def events(posted: list[Posted]) -> list[dict]:
    """Every event of every post, in order (the publisher sends a JSON array)."""
    return [event for post in posted for event in post.events()]


@pytest.fixture
def deployed(
    service_env: None,
    datastore: Datastore,  # the test's container, made
    mlflow_workspace: Path,
    tmp_path: Path,
    clock: Clock,
) -> World:
    """The app's own wiring (bootstrap) on Azurite and the local registry; versions 1 then 2 promoted by runs."""
    from retrainer import bootstrap

    bootstrap.reset()
    labels = {"1": "Instrument/Valve/Gate valve", "2": "Instrument/Valve/Globe valve", "3": "Piping/Fitting/Reducer"}
    bootstrap.datastore().write("data/label_map.json", json.dumps(labels).encode())
    world = World(LocalModelRegistry(mlflow_workspace), (bootstrap.ledger(), bootstrap.datastore()), clock, tmp_path)
    world.run(0.60)
    world.run(0.70)
    assert world.best() == ["2"]
    return world


def test_a_rollback_by_the_command_restores_version_1_with_its_record_and_event(
    topic: list[Posted], deployed: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from retrainer import cli

    assert cli.main(["promote", "1", "--reason", "version 2 misses gate valves"]) == 0
    assert "rolled back to pid-symbol-detector version 1 (from 2)" in capsys.readouterr().out
    assert deployed.best() == ["1"]
    record = deployed.record()
    assert record is not None and (record.version, record.decided_by, record.score) == ("1", "operator", 0.60)
    (event,) = events(topic)
    assert event["eventType"] == "PidSymbolRetraining.ModelPromoted"
    assert event["subject"] == "models/pid-symbol-detector/versions/1" and event["data"]["decided_by"] == "operator"

    assert cli.main(["models"]) == 0
    shown = capsys.readouterr().out
    assert "rolled back 2 -> 1 by " in shown and "version 2 misses gate valves (undoes " in shown
    assert "promoted 1 -> 2 by service (run-2)" in shown

    assert cli.main(["promote", "9", "--reason", "typo"]) == 2
    assert capsys.readouterr().err == (
        "retrain promote: pid-symbol-detector has no version '9' (the registry holds versions 1 to 2)\n"
    )
    assert cli.main(["pin", "--reason", "audit"]) == 0 and deployed.champion_record().pinned_reason == "audit"
    assert "pinned pid-symbol-detector version 1: the champion stays" in capsys.readouterr().out
    assert cli.main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["kind"] for c in listed["history"]][:2] == ["pinned", "rolled back"]
    assert [v["tags"].get("pinned_reason") for v in listed["versions"]] == ["audit", ""]
    assert cli.main(["unpin"]) == 0 and deployed.champion_record().pinned_reason is None


def http(name: str, method: str, url: str, body: bytes = b"") -> tuple[int, dict]:
    import azure.functions as func

    from tests.helpers import indexed_functions

    request = func.HttpRequest(method, url, headers={"Content-Type": "application/json"}, params={}, body=body)
    response = indexed_functions()[name].get_user_function()(request)
    return response.status_code, json.loads(response.get_body())


def test_the_operators_http_doors_share_the_process_registry(deployed: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Azure ML opening a registry builds an MLClient and fetches a token: once per process, not per request."""
    from retrainer import bootstrap

    real_open = bootstrap.open_registry
    opened: list[object] = []

    def counted_open(settings: Settings) -> ModelRegistry:
        opened.append(settings)
        return real_open(settings)

    monkeypatch.setattr(bootstrap, "open_registry", counted_open)
    for _ in range(3):
        assert http("pin_model", "PUT", "/api/models/best/pin", b'{"reason": "audit"}')[0] == 200
        assert http("unpin_model", "DELETE", "/api/models/best/pin")[0] == 200
    assert http("promote_model", "POST", "/api/models/best", b'{"version": "1", "reason": "rollback"}')[0] == 200
    assert len(opened) <= 1 and deployed.best() == ["1"]


def test_a_rollback_over_http_restores_version_1_and_bad_requests_get_one_line(
    topic: list[Posted], deployed: World
) -> None:
    status, body = http("promote_model", "POST", "/api/models/best", b'{"version": 1, "reason": "2 misses valves"}')
    assert status == 200 and deployed.best() == ["1"] and body["best_model"]["version"] == "1"
    assert body["change"]["kind"] == "rolled back" and body["change"]["actor"] == "operator (HTTP API)"
    assert body["change"]["undoes"] == deployed.controls.history(2)[1].id
    assert [event["data"]["version"] for event in events(topic)] == ["1"]
    deployed.register(0.9, classes=frozenset({"1", "2", "8"}))
    refusals = [
        (b"not json", 400, "the body must be a JSON object"),
        (b'["1"]', 400, "the body must be a JSON object"),
        (b'{"version": "2"}', 400, "'reason' must be a non-empty string"),
        (b'{"version": true, "reason": "x"}', 400, "'version' must be a non-empty string"),
        (b'{"version": "2", "reason": "x", "force": "yes"}', 400, "'force' must be a boolean"),
        (b'{"version": "9", "reason": "x"}', 404, "has no version '9'"),
        (b'{"version": "3", "reason": "x"}', 409, "was trained on a class map the service no longer uses"),
    ]
    for request_body, expected, words in refusals:
        status, body = http("promote_model", "POST", "/api/models/best", request_body)
        assert status == expected and words in body["error"] and "\n" not in body["error"], request_body
    assert deployed.best() == ["1"] and len(topic) == 1, "nothing moved"
    status, body = http("promote_model", "POST", "/api/models/best", b'{"version": "3", "reason": "x", "force": true}')
    assert status == 200 and deployed.best() == ["3"]

    status, body = http("pin_model", "PUT", "/api/models/best/pin", b'{"reason": "audit"}')
    assert status == 200 and body["best_model"]["pinned_reason"] == "audit" and body["change"]["kind"] == "pinned"
    assert http("pin_model", "PUT", "/api/models/best/pin", b"{}")[0] == 400
    status, body = http("unpin_model", "DELETE", "/api/models/best/pin")
    assert status == 200 and body["best_model"]["pinned_reason"] is None and body["change"]["kind"] == "unpinned"
    assert http("unpin_model", "DELETE", "/api/models/best/pin")[1]["change"] is None, "unpinning twice is harmless"


def test_retrain_status_shows_the_class_guard_with_the_fallen_class(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from retrainer import cli
    from retrainer.cli import runs as run_commands

    def compared(class_id: str, name: str, before: float, after: float, high: float, count: int) -> ClassComparison:
        interval = DifferenceInterval(
            difference=after - before, low=after - before - 0.1, high=high, confidence=0.98, resamples=500
        )
        return ClassComparison(
            class_id=class_id, name=name, instances=count, champion_ap=before, challenger_ap=after, interval=interval
        )

    guard = ClassGuard(
        min_instances=20,
        max_drop=0.1,
        confidence=0.983,
        classes=[
            compared("1", "Gate valve", 0.70, 0.95, 0.40, 31),
            compared("7", "Relief valve", 0.41, 0.05, -0.2, 22),
            compared("9", "Reducer", 0.50, 0.10, 0.1, 3),
        ],
    )
    decision = PromotionRecord(
        name=NAME,
        challenger_version="7",
        champion_version="6",
        chosen_version="6",
        best_version="6",
        promoted=False,
        challenger_score=0.86,
        champion_score=0.80,
        reason=guard.verdict(decide_promotion(0.86, 0.80, 0.0)).reason,
    )
    decision.comparison.class_guard = guard
    runner = FakeRunner()
    runner.statuses["run-9"] = RunStatus("run-9", RunState.COMPLETED, "Completed", decision=decision)
    monkeypatch.setattr(run_commands, "runner_for", lambda settings: runner)
    assert cli.main(["status", "run-9", "--backend", "local"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert "but Relief valve AP fell 0.41 -> 0.05: the champion stays" in shown[1]
    assert shown[3] == (
        "class guard: 2 of 3 classes watched (at least 20 symbols on the holdout), each may lose at most 0.1 AP@0.5 "
        "beyond doubt (98.3% intervals): fell: Relief valve"
    )
    assert shown[4].startswith("  Relief valve (22): 0.41 -> 0.05, -0.360 (98% interval") and shown[4].endswith("FELL")
    assert shown[5].startswith("  Gate valve (31): 0.70 -> 0.95") and len(shown) == 6, "unwatched classes are counted"


def test_a_reason_that_is_not_text_or_too_long_is_refused_by_every_door_with_one_line(
    deployed: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lone surrogate is what Python makes of a Latin-1 terminal's bytes in argv; it cannot be stored as UTF-8."""
    from retrainer import cli

    latin1 = "caf\udce9 audit"
    for argv in (["pin", "--reason", latin1], ["promote", "1", "--reason", latin1], ["unpin", "--reason", latin1]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "the reason holds bytes that are not UTF-8 text" in err and err.count("\n") == 1, err
    assert cli.main(["unpin", "--reason", "x" * 10_000]) == 2
    assert capsys.readouterr().err == "retrain unpin: the reason is longer than 500 characters (10000)\n"
    status, body = http("promote_model", "POST", "/api/models/best", b'{"version": "1", "reason": "caf\\udce9"}')
    assert status == 400 and "\n" not in body["error"], "the host's JSON reader refuses a lone surrogate already"
    assert http("unpin_model", "DELETE", "/api/models/best/pin", b'{"reason": "' + b"x" * 10_000 + b'"}')[0] == 400
    assert deployed.best() == ["2"] and deployed.champion_record().version == "2"
    assert cli.main(["models", "--json"]) == 0 and capsys.readouterr().out, "nothing stored that cannot be read back"


def test_a_run_promotion_without_a_readable_date_is_dated_by_the_service_clock(world: World) -> None:
    from tests.fakes import first_promotion

    decision = first_promotion().model_copy(update={"champion_since": "not a date"})
    world.controls.record_run(decision, "run-undated")
    (entry,) = world.controls.history()
    assert entry.at == world.clock() and entry.run_id == "run-undated"
