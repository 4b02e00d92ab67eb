"""The event-driven service: events, single-flight submission, following runs, failures.

Every test runs twice: on in-memory tables and blobs (the fast tier) and on Azurite (integration).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import azure.functions as func
import pytest
from azure.data.tables import UpdateMode
from azure.functions.timer import TimerRequest

from retrainer import bootstrap
from retrainer.champion.authority import ChampionAuthority
from retrainer.champion.record import BestModel
from retrainer.datastore import BlobStore
from retrainer.events import BLOB_CREATED, RunChanged, build_subject
from retrainer.ledger import Ledger
from retrainer.ledger.images import ImageState
from retrainer.ledger.runs import UnreadableRunError
from retrainer.ledger.slot import SlotTaken
from retrainer.policy import BatchRule, PendingBatch, backoff_until, batch_due
from retrainer.publisher import model_promoted_publisher
from retrainer.retraining import RetrainingService
from retrainer.settings import load_settings
from shared.promotion import PromotionRecord
from shared.records import RunState
from tests.fakes import FakeRunner, promotion_with_classes, registry_after
from tests.helpers import (
    Clock,
    at_once,
    deliver,
    indexed_functions,
    listening_server,
    parsed_by_javascript,
    stored_run,
    strict_json,
)


@pytest.fixture
def workspace() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def ledger(storage: tuple[Ledger, BlobStore]) -> Ledger:
    return storage[0]


@pytest.fixture
def datastore(storage: tuple[Ledger, BlobStore]) -> BlobStore:
    return storage[1]


class MakeService(Protocol):
    def __call__(
        self, event_check_interval: float = ..., decision: PromotionRecord = ..., **env: str
    ) -> RetrainingService: ...


@pytest.fixture
def make_service(
    monkeypatch: pytest.MonkeyPatch,
    ledger: Ledger,
    datastore: BlobStore,
    workspace: FakeRunner,
    clock: Clock,
    tmp_path: Path,
) -> MakeService:
    """A service whose runs' tag steps leave the registry as `decision` (DECISION by default) says."""

    def make(event_check_interval: float = 5.0, decision: PromotionRecord = DECISION, **env: str) -> RetrainingService:
        defaults = {
            "RETRAIN_MIN_NEW_IMAGES": "3",
            "RETRAIN_QUIET_MINUTES": "10",
            "RETRAIN_MAX_WAIT_MINUTES": "120",
            "RETRAIN_BACKOFF_MINUTES": "15",
            "RETRAIN_MAX_CONSECUTIVE_FAILURES": "3",
        }
        for key, value in {**defaults, **env}.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        champion = ChampionAuthority(settings, registry_after(decision, tmp_path), ledger, datastore, clock=clock)
        return RetrainingService(
            settings,
            ledger,
            runner=lambda: workspace,
            champion=lambda: champion,
            clock=clock,
            event_check_interval=event_check_interval,
        )

    return make


def submitted_by(svc: RetrainingService) -> str:
    """The run a tick submits, which the test expects it to."""
    run_id = svc.tick().submitted
    assert run_id is not None, "the tick submitted no run"
    return run_id


def champion_version(svc: RetrainingService) -> str:
    best = svc.champion.record()
    assert best is not None, "no champion"
    return best.version


def blob_created(container: str, path: str, etag: str, api: str = "PutBlob") -> tuple[str, dict]:
    return build_subject(container, path), {"api": api, "eTag": etag, "url": f"http://127.0.0.1/{container}/{path}"}


DECISION = PromotionRecord(
    name="pid-symbol-detector",
    challenger_version="4",
    champion_version="3",
    chosen_version="4",
    best_version="4",
    promoted=True,
    challenger_score=0.91,
    champion_score=0.88,
    reason="better",
    champion_change="service-run-1",
    champion_since="2026-01-01T06:00:00.000000+00:00",
)


def test_only_completed_image_uploads_of_our_folder_are_recorded_once(
    make_service: MakeService, container_name: str
) -> None:
    svc = make_service()
    assert deliver(svc, *blob_created(container_name, "data/images/a.jpg", "0x1"))
    assert not deliver(svc, *blob_created(container_name, "data/images/a.jpg", "0x1")), "redelivery"
    assert deliver(svc, *blob_created(container_name, "data/images/a.jpg", "0x2")), "a new version"
    ignored = [
        blob_created(container_name, "data/images/b.jpg", "0x1", api="PutBlock"),
        blob_created(container_name, "data/labels/b_symbols.npy", "0x1"),
        blob_created(container_name, "data/images/readme.txt", "0x1"),
        blob_created("other-container", "data/images/c.jpg", "0x1"),
    ]
    assert not any(deliver(svc, subject, data) for subject, data in ignored)
    assert svc.pending_batch().count == 2


def test_a_storm_of_duplicated_shuffled_events_records_each_image_once_and_submits_once(
    make_service: MakeService, container_name: str, workspace: FakeRunner, ledger: Ledger
) -> None:
    svc = make_service(RETRAIN_MIN_NEW_IMAGES="3000", RETRAIN_QUIET_MINUTES="0")
    images = [f"data/images/area{i % 7}/sheet{i}.jpg" for i in range(3000)]
    events = [blob_created(container_name, path, f'"0x{i:x}"') for i, path in enumerate(images)]
    events += random.Random(1).choices(events, k=3000)  # duplicates and redeliveries
    events += [blob_created(container_name, f"data/images/x{i}.jpg", "0x1", api="PutBlock") for i in range(4000)]
    random.Random(2).shuffle(events)
    assert len(events) == 10_000

    def handle(event: tuple[str, dict]) -> None:
        if deliver(svc, *event):
            svc.submit_if_due_after_event()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(handle, events))
    svc.submit_if_due("timer")  # the last images may land after the last look
    assert len(ledger.images.all()) == 3000
    assert len(workspace.submitted) == 1
    (run,) = ledger.runs.newest()
    assert run.image_count == 3000 and ledger.images.pending() == []


@pytest.mark.parametrize(("interval", "submitted"), [(3600.0, []), (0.0, ["run-1"])], ids=["hourly", "every-event"])
def test_the_event_path_looks_at_the_batch_at_most_once_per_interval(
    make_service: MakeService, container_name: str, workspace: FakeRunner, interval: float, submitted: list[str]
) -> None:
    """The first image's look finds 1 of 3 images; within the interval the later images look at nothing."""
    svc = make_service(RETRAIN_QUIET_MINUTES="0", event_check_interval=interval)
    looks = []
    for i in range(3):
        deliver(svc, *blob_created(container_name, f"data/images/{i}.jpg", "0x1"))
        looks.append(svc.submit_if_due_after_event())
    assert [run_id for run_id in looks if run_id] == submitted
    assert [label.split(":")[0] for label in workspace.submitted] == ["event"] * len(submitted)


def test_concurrent_submissions_never_exceed_the_active_limit(make_service: MakeService, workspace: FakeRunner) -> None:
    svc = make_service()
    outcomes = at_once([lambda: svc.submit("manual", "race")] * 8)
    assert len(workspace.submitted) == 1 and sum(isinstance(o, SlotTaken) for o in outcomes) == 7


def test_batch_waits_for_quiet_then_submits_and_later_images_wait_for_the_next_run(
    make_service: MakeService, container_name: str, workspace: FakeRunner, clock: Clock, ledger: Ledger
) -> None:
    svc = make_service()
    for i in range(3):
        deliver(svc, *blob_created(container_name, f"data/images/{i}.jpg", "0x1"))
    assert svc.tick().submitted is None, "still within the quiet period"
    clock.advance(minutes=11)
    run_id = submitted_by(svc)
    assert run_id == "run-1"
    deliver(svc, *blob_created(container_name, "data/images/late.jpg", "0x1"))
    assert [i.path for i in ledger.images.pending()] == ["data/images/late.jpg"]
    assert len(ledger.images.of_run(run_id)) == 3


def test_completion_promotes_once_however_often_it_is_handled(
    make_service: MakeService, workspace: FakeRunner, ledger: Ledger, datastore: BlobStore
) -> None:
    svc = make_service()
    run_id = svc.submit("manual", "test")
    workspace.finish(run_id, RunState.RUNNING)
    assert svc.follow_run(run_id) == "running"
    workspace.finish(run_id, RunState.COMPLETED, DECISION)
    assert deliver(svc, "", {"runId": run_id}, "Microsoft.MachineLearningServices.RunCompleted")
    best = BestModel.model_validate_json(datastore.read("models/best_model.json"))
    assert (best.version, best.score, best.run) == ("4", 0.91, run_id)
    etag = datastore.etag("models/best_model.json")
    svc.tick()
    assert svc.follow_run(run_id) == "completed"
    assert datastore.etag("models/best_model.json") == etag, "handling the same completion again changes nothing"
    record = stored_run(ledger, run_id)
    assert [h["state"] for h in record.history] == ["queued", "running", "completed"]
    assert record.decision == DECISION
    assert ledger.slot.read().active == {}


def test_a_failed_run_returns_its_images_and_backs_off(
    make_service: MakeService, container_name: str, workspace: FakeRunner, clock: Clock, ledger: Ledger
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0")
    for i in range(3):
        deliver(svc, *blob_created(container_name, f"data/images/{i}.jpg", "0x1"))
    run_id = submitted_by(svc)
    workspace.finish(run_id, RunState.FAILED, error="AutoML ran out of quota")
    outcome = svc.tick()
    assert outcome.followed == {run_id: "failed"} and outcome.submitted is None
    assert len(ledger.images.pending()) == 3 and "backing off" in (outcome.paused_reason or "")
    assert stored_run(ledger, run_id).error == "AutoML ran out of quota"
    clock.advance(minutes=16)
    assert svc.tick().submitted == "run-2"


def test_submit_raising_keeps_images_pending_and_a_status_timeout_changes_nothing(
    make_service: MakeService, container_name: str, workspace: FakeRunner, clock: Clock, ledger: Ledger
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0")
    for i in range(3):
        deliver(svc, *blob_created(container_name, f"data/images/{i}.jpg", "0x1"))
    workspace.fail_submit = ConnectionError("workspace unreachable")
    with pytest.raises(ConnectionError):
        svc.submit("timer", "due")
    assert len(ledger.images.pending()) == 3 and ledger.slot.read().active == {}
    workspace.fail_submit = None
    clock.advance(minutes=16)
    run_id = submitted_by(svc)
    workspace.fail_status = TimeoutError("status call timed out")
    assert svc.tick().followed == {run_id: "queued"}
    workspace.fail_status = None
    workspace.finish(run_id, RunState.COMPLETED, DECISION)
    assert svc.tick().followed == {run_id: "completed"}
    assert ledger.slot.read().consecutive_failures == 0


def test_repeated_failures_pause_auto_submission_until_a_manual_run_succeeds(
    make_service: MakeService, container_name: str, workspace: FakeRunner, clock: Clock
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0", RETRAIN_MAX_CONSECUTIVE_FAILURES="2", RETRAIN_BACKOFF_MINUTES="0")
    deliver(svc, *blob_created(container_name, "data/images/a.jpg", "0x1"))
    deliver(svc, *blob_created(container_name, "data/images/b.jpg", "0x1"))
    deliver(svc, *blob_created(container_name, "data/images/c.jpg", "0x1"))
    first = submitted_by(svc)
    workspace.finish(first, RunState.FAILED, error="boom")
    second = submitted_by(svc)  # no back-off configured: the same tick resubmits
    assert second and second != first
    workspace.finish(second, RunState.FAILED, error="boom again")
    assert svc.tick().submitted is None
    state = svc.submission_state()
    assert state.paused and "paused after 2 failed runs" in state.reason
    assert svc.tick().submitted is None
    manual = svc.submit("manual", "operator retry")
    workspace.finish(manual, RunState.COMPLETED, DECISION)
    svc.tick()
    assert not svc.submission_state().paused


def test_policies_with_an_injected_clock() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rule = BatchRule(min_new_images=5, quiet=timedelta(minutes=10), max_wait=timedelta(hours=2))
    batch = PendingBatch(5, start, start + timedelta(minutes=5))
    assert not batch_due(batch, rule, start + timedelta(minutes=14))[0]
    assert batch_due(batch, rule, start + timedelta(minutes=15))[0]
    few = PendingBatch(2, start, start)
    assert not batch_due(few, rule, start + timedelta(minutes=119))[0]
    assert "waited" in batch_due(few, rule, start + timedelta(minutes=120))[1]
    assert backoff_until(3, start, timedelta(minutes=15)) == start + timedelta(minutes=60)
    assert backoff_until(30, start, timedelta(minutes=15)) == start + timedelta(days=1)


# --- the function app's handlers, with real azure.functions objects ---------------------------------------


@pytest.fixture
def app_service(
    make_service: MakeService, ledger: Ledger, datastore: BlobStore, clock: Clock
) -> Iterator[RetrainingService]:
    """The service the handlers reach through the composition root, on this test's storage; every event may
    look at the batch (no rate limit)."""
    from retrainer.status_view import StatusView

    svc = make_service(RETRAIN_QUIET_MINUTES="0", event_check_interval=0)
    with pytest.MonkeyPatch.context() as patch:  # undone before the environment fixture resets the service
        patch.setattr(bootstrap, "retraining", lambda: svc)
        patch.setattr(bootstrap, "ledger", lambda: ledger)
        patch.setattr(bootstrap, "datastore", lambda: datastore)
        patch.setattr(bootstrap, "status_view", lambda: StatusView(ledger, datastore, load_settings(), clock))
        yield svc


def handler(name: str) -> Callable[..., Any]:
    return indexed_functions()[name].get_user_function()


def test_event_grid_handler_records_images_and_submits_a_due_batch(
    app_service: RetrainingService, container_name: str, workspace: FakeRunner, datastore: BlobStore
) -> None:
    for i in range(3):
        subject, data = blob_created(container_name, f"data/images/{i}.jpg", f"0x{i}")
        handler("on_event")(
            func.EventGridEvent(
                id=f"e{i}",
                data=data,
                topic="/subscriptions/s/providers/Microsoft.Storage/storageAccounts/a",
                subject=subject,
                event_type=BLOB_CREATED,
                event_time=datetime.now(UTC),
                data_version="1",
            )
        )
    assert workspace.submitted and app_service.pending_batch().count == 0


def test_the_timer_handler_follows_a_run_to_its_end_and_submits_the_batch_that_became_due(
    app_service: RetrainingService,
    container_name: str,
    workspace: FakeRunner,
    ledger: Ledger,
    datastore: BlobStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pending_three(app_service, container_name)
    run_id = app_service.submit("manual", "t")
    workspace.finish(run_id, RunState.COMPLETED, DECISION)
    for i in range(3):
        deliver(app_service, *blob_created(container_name, f"data/images/later{i}.jpg", "0x1"))
    with caplog.at_level("INFO", logger="retrainer.triggers.monitor"):
        handler("monitor")(TimerRequest(past_due=False))
    assert f"monitor: followed {{'{run_id}': 'completed'}}, submitted run-2" in caplog.text
    record = stored_run(ledger, run_id)
    assert record.state == RunState.COMPLETED and record.promotion_done
    assert len(ledger.images.of_run(run_id, ImageState.TRAINED)) == 3, "the finished run's images are trained"
    assert BestModel.model_validate_json(datastore.read("models/best_model.json")).version == "4"
    assert ledger.slot.read().active_runs == ["run-2"] and len(ledger.images.of_run("run-2")) == 3
    assert ledger.images.pending() == []


def request(method: str, url: str, body: bytes = b"", route_params: dict | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        method, url, headers={"Content-Type": "application/json"}, params={}, route_params=route_params or {}, body=body
    )


def post_run(body: bytes) -> func.HttpResponse:
    return handler("submit_run")(request("POST", "/api/runs", body))


def test_post_runs_starts_a_run_and_answers_202_with_its_location(
    app_service: RetrainingService, workspace: FakeRunner, ledger: Ledger
) -> None:
    response = post_run(b'{"reason": "new symbols"}')
    assert response.status_code == 202
    body = json.loads(response.get_body())
    assert body == {"run_id": "run-1", "state": "queued"} and response.headers["Location"] == "/api/runs/run-1"
    assert stored_run(ledger, "run-1").reason == "new symbols" and ledger.slot.read().active_runs == ["run-1"]


def test_post_runs_answers_409_while_the_slot_is_taken_and_force_starts_one_more_at_most(
    app_service: RetrainingService, workspace: FakeRunner
) -> None:
    assert post_run(b'{"reason": "first"}').status_code == 202
    taken = post_run(b'{"reason": "again"}')
    assert taken.status_code == 409 and "RETRAIN_MAX_FORCED_RUNS" in json.loads(taken.get_body())["error"]
    assert post_run(b'{"reason": "again", "force": true}').status_code == 202
    capped = post_run(b'{"reason": "more", "force": true}')
    assert capped.status_code == 409, "force starts at most RETRAIN_MAX_FORCED_RUNS extra runs"
    assert "RETRAIN_MAX_FORCED_RUNS" not in json.loads(capped.get_body())["error"], "no hint to force again"
    assert len(workspace.submitted) == 2


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "must be JSON"),
        (b'["a list"]', "must be a JSON object"),
        (b'{"force": "yes"}', "'force' a boolean"),
        (b'{"reason": 7}', "'reason' must be a string"),
    ],
    ids=["not-json", "not-an-object", "force-not-a-boolean", "reason-not-a-string"],
)
def test_post_runs_refuses_a_body_it_cannot_read_with_400_and_submits_nothing(
    app_service: RetrainingService, workspace: FakeRunner, body: bytes, error: str
) -> None:
    response = post_run(body)
    assert response.status_code == 400 and error in json.loads(response.get_body())["error"]
    assert workspace.submitted == []


def test_get_runs_lists_the_runs_newest_first_the_pending_images_and_whether_submission_is_paused(
    app_service: RetrainingService, container_name: str, clock: Clock
) -> None:
    first = json.loads(post_run(b'{"reason": "one"}').get_body())["run_id"]
    clock.advance(minutes=1)
    forced = json.loads(post_run(b'{"reason": "two", "force": true}').get_body())["run_id"]
    deliver(app_service, *blob_created(container_name, "data/images/new.jpg", "0x1"))
    listing = json.loads(handler("list_runs")(request("GET", "/api/runs")).get_body())
    assert [run["run_id"] for run in listing["runs"]] == [forced, first]
    assert listing["pending_images"] == 1
    assert listing["auto_submission"] == {"paused": False, "reason": None}


def test_get_run_answers_its_record_and_404_for_a_run_it_does_not_know(app_service: RetrainingService) -> None:
    run_id = json.loads(post_run(b'{"reason": "new symbols"}').get_body())["run_id"]
    one = handler("get_run")(request("GET", f"/api/runs/{run_id}", route_params={"run_id": run_id}))
    assert one.status_code == 200
    assert json.loads(one.get_body())["reason"] == "new symbols" and json.loads(one.get_body())["state"] == "queued"
    assert handler("get_run")(request("GET", "/api/runs/x", route_params={"run_id": "x"})).status_code == 404


def test_get_best_model_answers_404_until_a_run_promotes_one_then_the_model(
    app_service: RetrainingService, workspace: FakeRunner
) -> None:
    assert handler("best_model")(request("GET", "/api/models/best")).status_code == 404
    run_id = json.loads(post_run(b"{}").get_body())["run_id"]
    workspace.finish(run_id, RunState.COMPLETED, DECISION)
    app_service.tick()
    best = handler("best_model")(request("GET", "/api/models/best"))
    assert best.status_code == 200
    assert json.loads(best.get_body()) | {"time": "t"} == {
        "name": "pid-symbol-detector",
        "version": "4",
        "score": 0.91,
        "run": run_id,
        "time": "t",
        "decided_by": "service",
        "reason": "better",
        "replaced_version": "3",
        "change": "service-run-1",
        "pinned_reason": None,
        "pinned_by": None,
        "pinned_at": None,
    }


def test_http_submit_failure_is_a_502_without_secrets(app_service: RetrainingService, workspace: FakeRunner) -> None:
    workspace.fail_submit = RuntimeError("denied for AccountKey=c2VjcmV0 on https://x/?sig=abc")
    response = handler("submit_run")(request("POST", "/api/runs", b"{}"))
    body = json.loads(response.get_body())["error"]
    assert response.status_code == 502 and "c2VjcmV0" not in body and "sig=abc" not in body


def test_promotion_publishes_model_promoted_to_the_configured_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    with listening_server() as (url, received):
        monkeypatch.setenv("EVENTGRID_TOPIC_ENDPOINT", f"{url}/api/events")
        monkeypatch.setenv("EVENTGRID_TOPIC_KEY", "topic-key-not-logged")
        publish = model_promoted_publisher(load_settings())
        assert publish is not None
        publish(BestModel(name="pid-symbol-detector", version="4", score=0.91, run="run-1", time="t"))
    (post,) = received
    key, (event,) = post.headers.get("aeg-sas-key"), post.events()
    assert key == "topic-key-not-logged"
    assert event["eventType"] == "PidSymbolRetraining.ModelPromoted"
    assert event["subject"] == "models/pid-symbol-detector/versions/4" and event["data"]["score"] == 0.91


# --- faults: nothing stuck, nothing lost ------------------------------------------------------------


def pending_three(svc: RetrainingService, container_name: str) -> None:
    for i in range(3):
        deliver(svc, *blob_created(container_name, f"data/images/{i}.jpg", "0x1"))


def test_every_active_run_has_a_deadline(make_service: MakeService, clock: Clock, ledger: Ledger) -> None:
    svc = make_service(RETRAIN_RUN_TIMEOUT_MINUTES="90")
    run_id = svc.submit("manual", "t")
    assert stored_run(ledger, run_id).deadline == clock.now + timedelta(minutes=90)


def test_a_status_that_keeps_failing_fails_the_run_at_its_deadline(
    make_service: MakeService, container_name: str, workspace: FakeRunner, clock: Clock, ledger: Ledger
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0", RETRAIN_RUN_TIMEOUT_MINUTES="60")
    pending_three(svc, container_name)
    run_id = submitted_by(svc)
    workspace.fail_status = ValueError("the backend returned nonsense")  # not a transport error
    clock.advance(minutes=30)
    assert svc.tick().followed == {run_id: "queued"}, "before the deadline it is retried"
    clock.advance(minutes=31)
    outcome = svc.tick()
    assert outcome.followed == {run_id: "failed"}
    assert "no status by the deadline" in stored_run(ledger, run_id).error
    assert len(ledger.images.pending()) == 3 and ledger.slot.read().active == {}


def test_a_run_still_running_at_its_deadline_is_canceled_and_failed(
    make_service: MakeService, container_name: str, workspace: FakeRunner, clock: Clock, ledger: Ledger
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0", RETRAIN_RUN_TIMEOUT_MINUTES="60")
    pending_three(svc, container_name)
    run_id = submitted_by(svc)
    workspace.finish(run_id, RunState.RUNNING)
    clock.advance(minutes=61)
    svc.tick()
    assert workspace.canceled == [run_id] and stored_run(ledger, run_id).state == "failed"
    assert "at its deadline" in stored_run(ledger, run_id).error and len(ledger.images.pending()) == 3


def test_a_reason_too_long_for_a_table_row_is_bounded_and_the_run_recorded(
    make_service: MakeService, ledger: Ledger
) -> None:
    svc = make_service()
    run_id = svc.submit("manual", "x" * 40_000)
    record = ledger.runs.get(run_id)
    assert record is not None and len(record.reason) <= 500
    assert ledger.slot.read().active_runs == [run_id]


def test_a_run_whose_decision_holds_150_classes_completes_promotes_and_frees_its_slot(
    make_service: MakeService, container_name: str, workspace: FakeRunner, ledger: Ledger
) -> None:
    """The tag step's record of a 150-class label map is longer than a table property may hold (32K characters):
    it was refused at every tick, also past the deadline, and the run held the only slot for good."""
    decision = promotion_with_classes(150)
    svc = make_service(RETRAIN_QUIET_MINUTES="0", decision=decision)
    pending_three(svc, container_name)
    run_id = submitted_by(svc)
    assert len(decision.model_dump_json()) > 32_768
    workspace.finish(run_id, RunState.COMPLETED, decision)
    outcome = svc.tick()
    assert outcome.failures == [] and outcome.followed == {run_id: RunState.COMPLETED}
    record = ledger.runs.get(run_id)
    assert record is not None and record.promotion_done
    assert record.decision == decision, "the whole record is kept, every class of the guard"
    assert svc.champion.record() is not None and champion_version(svc) == "2"
    assert ledger.slot.read().active == {} and len(ledger.images.of_run(run_id, ImageState.TRAINED)) == 3
    assert [run.run_id for run in ledger.runs.newest()] == [run_id]


def test_storage_lost_after_the_workspace_accepted_a_run_is_reconciled_not_resubmitted(
    make_service: MakeService,
    container_name: str,
    workspace: FakeRunner,
    clock: Clock,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0")
    pending_three(svc, container_name)
    real_save = ledger.runs.save
    monkeypatch.setattr(ledger.runs, "save", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("storage lost")))
    with pytest.raises(ConnectionError):
        svc.submit("timer", "due")
    monkeypatch.setattr(ledger.runs, "save", real_save)
    assert workspace.submitted and ledger.images.pending() == [], "the claim holds the images"
    assert svc.tick().submitted is None, "no second submission of the same images"
    clock.advance(minutes=16)
    svc.tick()
    assert len(workspace.submitted) == 1
    assert ledger.slot.read().active_runs == ["run-1"] and ledger.runs.get("run-1") is not None
    assert len(ledger.images.of_run("run-1")) == 3


def test_a_claim_whose_submitter_died_before_submitting_frees_its_images(
    make_service: MakeService, container_name: str, workspace: FakeRunner, clock: Clock, ledger: Ledger
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0")
    pending_three(svc, container_name)
    claim = ledger.slot.claim(1, clock.now)
    ledger.images.assign(ledger.images.pending(), ImageState.IN_RUN, claim)  # then the process died
    assert svc.tick().submitted is None
    clock.advance(minutes=16)
    assert svc.tick().submitted == "run-1", "the images came back and make a batch again"
    assert len(workspace.submitted) == 1 and claim not in ledger.slot.read().active


def test_a_corrupt_best_model_record_blocks_neither_promotion_nor_the_api(
    make_service: MakeService, workspace: FakeRunner, datastore: BlobStore
) -> None:
    svc = make_service()
    datastore.write("models/best_model.json", b"{not json")
    assert svc.champion.record() is None
    run_id = svc.submit("manual", "t")
    workspace.finish(run_id, RunState.COMPLETED, DECISION)
    svc.tick()
    assert svc.champion.record() is not None and champion_version(svc) == "4"


def test_a_promotion_that_failed_is_retried_by_the_next_tick(
    make_service: MakeService,
    workspace: FakeRunner,
    ledger: Ledger,
    datastore: BlobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = make_service()
    run_id = svc.submit("manual", "t")
    workspace.finish(run_id, RunState.COMPLETED, DECISION)
    real_write = datastore.write_json
    monkeypatch.setattr(datastore, "write_json", lambda *a: (_ for _ in ()).throw(ConnectionError("lost")))
    svc.tick()
    assert stored_run(ledger, run_id).state == "completed" and not stored_run(ledger, run_id).promotion_done
    monkeypatch.setattr(datastore, "write_json", real_write)
    svc.tick()
    assert stored_run(ledger, run_id).promotion_done and champion_version(svc) == "4"


def write_as_a_newer_release(ledger: Ledger, run_id: str, state: str = "suspended") -> None:
    """Both rows of a run as a newer release could write them: in a state this release does not know."""
    runs = ledger.runs.table
    for row in list(runs.query_entities("PartitionKey eq 'runs.v2'")):
        if row["run_id"] == run_id:
            history = [*json.loads(row["history"]), {"state": state, "at": "2026-11-28T09:30:00+00:00"}]
            runs.upsert_entity({**row, "state": state, "history": json.dumps(history)}, mode=UpdateMode.REPLACE)


def test_a_run_row_of_a_state_this_release_does_not_know_is_skipped_and_the_tick_goes_on(
    make_service: MakeService,
    workspace: FakeRunner,
    ledger: Ledger,
    datastore: BlobStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A promotion whose record write failed once is retried although a newer release's run is in the way."""
    svc = make_service()
    done = svc.submit("manual", "t")
    workspace.finish(done, RunState.COMPLETED, DECISION)
    real_write = datastore.write_json
    monkeypatch.setattr(datastore, "write_json", lambda *a: (_ for _ in ()).throw(ConnectionError("lost")))
    svc.tick()
    monkeypatch.setattr(datastore, "write_json", real_write)
    newer = svc.submit("manual", "a newer release suspends this one")
    write_as_a_newer_release(ledger, newer)
    with caplog.at_level("WARNING", logger="retrainer"):
        outcome = svc.tick()
    assert outcome.failures == [] and newer not in outcome.followed
    assert stored_run(ledger, done).promotion_done and champion_version(svc) == "4"
    assert f"run {newer}" in caplog.text and "'suspended'" in caplog.text
    assert ledger.slot.read().active_runs == [newer], "its slot is the newer release's to settle"
    assert [run.run_id for run in ledger.runs.newest()] == [done], "runs() lists the runs this release can act on"
    assert svc.on_run_changed(RunChanged(newer)) is False
    with pytest.raises(UnreadableRunError, match="'suspended'"):
        ledger.runs.get(newer)
    raw = next(r for r in ledger.runs.table.query_entities("PartitionKey eq 'runs.v2'") if r["run_id"] == newer)
    assert raw["state"] == "suspended", "never rewritten by a release that cannot read it"


def test_the_api_and_the_status_page_show_a_run_of_an_unknown_state_as_unknown(
    app_service: RetrainingService, workspace: FakeRunner, ledger: Ledger, clock: Clock
) -> None:
    done = app_service.submit("manual", "t")
    workspace.finish(done, RunState.COMPLETED, DECISION)
    app_service.tick()
    clock.advance(minutes=1)
    newer = app_service.submit("manual", "a newer release suspends this one")
    write_as_a_newer_release(ledger, newer)
    listing = handler("list_runs")(request("GET", "/api/runs"))
    assert listing.status_code == 200
    runs = json.loads(listing.get_body())["runs"]
    assert [(run["run_id"], run["state"]) for run in runs] == [(newer, "unknown"), (done, "completed")]
    assert runs[0]["stored_state"] == "suspended" and "suspended" in runs[0]["problem"]
    one = handler("get_run")(request("GET", f"/api/runs/{newer}", route_params={"run_id": newer}))
    assert one.status_code == 200 and json.loads(one.get_body())["state"] == "unknown"
    cancel = handler("cancel_run")(request("POST", f"/api/runs/{newer}/cancel", route_params={"run_id": newer}))
    assert cancel.status_code == 409 and "'suspended'" in json.loads(cancel.get_body())["error"]
    assert workspace.canceled == []
    page = handler("status_page")(request("GET", "/api/status"))
    body = page.get_body().decode()
    assert page.status_code == 200 and newer in body and "suspended" in body and done in body


def test_every_api_answer_is_json_a_javascript_client_parses_whatever_the_figures_hold(
    app_service: RetrainingService, workspace: FakeRunner, datastore: BlobStore
) -> None:
    """NaN and Infinity are not JSON: figures that hold them are answered as the strings records write."""
    nan, inf = float("nan"), float("inf")
    unscored = DECISION.model_copy(
        update={
            "promoted": False,
            "chosen_version": "3",
            "best_version": "3",
            "challenger_score": nan,
            "champion_score": inf,
            "challenger_per_class": {"1": nan, "2": inf, "3": -inf, "4": 0.5},
        }
    )
    run_id = app_service.submit("manual", "t")
    workspace.finish(run_id, RunState.COMPLETED, unscored)
    app_service.tick()
    datastore.write_json(
        "models/best_model.json",
        {
            **BestModel(name="m", version="3", score=None, run=run_id, time="2026-11-28T09:00:00+00:00").model_dump(),
            "score": "NaN",
        },
    )
    answers = {
        "list_runs": handler("list_runs")(request("GET", "/api/runs")),
        "get_run": handler("get_run")(request("GET", f"/api/runs/{run_id}", route_params={"run_id": run_id})),
        "best_model": handler("best_model")(request("GET", "/api/models/best")),
    }
    for route, answer in answers.items():
        assert answer.status_code == 200, route
        assert strict_json(answer.get_body()) == parsed_by_javascript(answer.get_body()), route
    run = strict_json(answers["get_run"].get_body())["decision"]
    assert (run["challenger_score"], run["champion_score"]) == ("NaN", "Infinity")
    assert run["challenger_per_class"] == {"1": "NaN", "2": "Infinity", "3": "-Infinity", "4": 0.5}
    assert strict_json(answers["best_model"].get_body())["score"] is None, "a champion's score is a number or none"


def test_a_redelivered_image_event_retries_the_conversion_that_failed(
    make_service: MakeService, container_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = make_service()
    calls: list[str] = []

    def convert(path: str) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise ConnectionError("storage hiccup while converting the waiting label")

    svc._on_image = convert
    with pytest.raises(ConnectionError):
        deliver(svc, *blob_created(container_name, "data/images/a.jpg", "0x1"))
    assert svc.pending_batch().count == 0, "not recorded while its label's conversion failed"
    assert deliver(svc, *blob_created(container_name, "data/images/a.jpg", "0x1")), "the redelivery records it"
    assert calls == ["data/images/a.jpg", "data/images/a.jpg"], "and converts the label"
    assert not deliver(svc, *blob_created(container_name, "data/images/a.jpg", "0x1"))
    assert len(calls) == 2, "a duplicate of a recorded image converts nothing again"


HOSTILE_EVENTS = {
    "data is a list": ("/blobServices/default/containers/{c}/blobs/data/images/a.jpg", ["PutBlob"]),
    "api is a number": ("/blobServices/default/containers/{c}/blobs/data/images/a.jpg", {"api": 7, "eTag": "1"}),
    "api is a list": (
        "/blobServices/default/containers/{c}/blobs/data/images/a.jpg",
        {"api": ["PutBlob"], "eTag": "1"},
    ),
    "api is a dict": ("/blobServices/default/containers/{c}/blobs/data/images/a.jpg", {"api": {"a": 1}, "eTag": "1"}),
    "eTag is an object": (
        "/blobServices/default/containers/{c}/blobs/data/images/a.jpg",
        {"api": "PutBlob", "eTag": {"x": 1}},
    ),
    "dot-dot segments": ("/blobServices/default/containers/{c}/blobs/data/images/../labels/x.jpg", None),
    "encoded slash and dots": ("/blobServices/default/containers/{c}/blobs/data/images/..%2F..%2Fmodels%2Fx.jpg", None),
    "a 100 KB subject": ("/blobServices/default/containers/{c}/blobs/data/images/" + "a" * 100_000 + ".jpg", None),
    "a control character": ("/blobServices/default/containers/{c}/blobs/data/images/a\x07.jpg", None),
    "subject is not a string": (None, None),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_EVENTS))
def test_hostile_image_events_are_ignored_not_raised(make_service: MakeService, container_name: str, case: str) -> None:
    svc = make_service()
    subject, data = HOSTILE_EVENTS[case]
    subject = subject.format(c=container_name) if isinstance(subject, str) else subject
    data = {"api": "PutBlob", "eTag": "0x1"} if data is None else data
    assert deliver(svc, subject, data if isinstance(data, dict) else {}) is False
    assert svc.pending_batch().count == 0


def test_a_long_unicode_image_name_is_recorded_under_a_bounded_key(
    make_service: MakeService, container_name: str, ledger: Ledger
) -> None:
    svc = make_service()
    path = "data/images/" + "符号" * 200 + ".jpg"  # 400 characters: beyond Table Storage's 1 KiB key in UTF-16
    assert deliver(svc, *blob_created(container_name, path, "0x1"))
    assert [image.path for image in ledger.images.all()] == [path]


@pytest.mark.parametrize("run_id", ["../../x", "it's", "a" * 10_000, "run/1", "", "#?"])
def test_azure_ml_events_for_odd_or_unknown_run_ids_are_ignored(make_service: MakeService, run_id: str) -> None:
    svc = make_service()
    assert not deliver(svc, "", {"runId": run_id}, "Microsoft.MachineLearningServices.RunCompleted")
    assert not deliver(svc, "", {"runId": ["x"]}, "Microsoft.MachineLearningServices.RunCompleted")


def test_cloud_events_are_accepted_like_event_grid_events(
    app_service: RetrainingService, container_name: str, workspace: FakeRunner
) -> None:
    for i in range(3):
        subject, data = blob_created(container_name, f"data/images/c{i}.jpg", f"0x{i}")
        handler("on_event")(
            func.CloudEvent(
                id=f"c{i}",
                source="/subscriptions/s/providers/Microsoft.Storage/storageAccounts/a",
                type=BLOB_CREATED,
                specversion="1.0",
                subject=subject,
                data=data,
            )
        )
    assert workspace.submitted


def test_the_event_handler_drops_what_names_nothing_of_ours(app_service: RetrainingService) -> None:
    event = func.EventGridEvent(
        id="x",
        data=None,  # type: ignore[arg-type]
        topic="t",
        subject="/blobServices/default/containers/data/blobs/data/images/../../etc/passwd",
        event_type=BLOB_CREATED,
        event_time=None,
        data_version="1",
    )
    handler("on_event")(event)
    assert app_service.pending_batch().count == 0


@pytest.mark.parametrize("run_id", ["../x", "'", "a" * 10_000, "run%2F1"])
def test_hostile_run_ids_get_404_not_500(app_service: RetrainingService, run_id: str) -> None:
    response = handler("get_run")(request("GET", "/api/runs/x", route_params={"run_id": run_id}))
    assert response.status_code == 404


def test_the_api_refuses_a_reason_too_long_and_says_a_corrupt_best_model_record_is_unreadable(
    app_service: RetrainingService, datastore: BlobStore
) -> None:
    from retrainer.ledger.rows import MAX_REASON_CHARS

    long = json.dumps({"reason": "x" * (MAX_REASON_CHARS + 1)}).encode()
    assert handler("submit_run")(request("POST", "/api/runs", long)).status_code == 400
    datastore.write("models/best_model.json", b"\x00garbage")
    answer = handler("best_model")(request("GET", "/api/models/best"))
    assert answer.status_code == 500, "a model was promoted: not 'none yet'"
    assert "not a valid best-model record" in json.loads(answer.get_body())["error"]


def test_a_failed_submission_logs_no_secret(
    app_service: RetrainingService, workspace: FakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    workspace.fail_submit = RuntimeError("denied: AccountKey=c2VjcmV0 sig=abc https://x/?sig=abc&code=fkey")
    with caplog.at_level("INFO"):
        assert handler("submit_run")(request("POST", "/api/runs", b"{}")).status_code == 502
    text = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert "c2VjcmV0" not in text and "sig=abc" not in text and "fkey" not in text


def test_a_canceled_run_returns_its_images_without_counting_as_a_failure(
    make_service: MakeService,
    container_name: str,
    workspace: FakeRunner,
    ledger: Ledger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0")
    pending_three(svc, container_name)
    run_id = submitted_by(svc)
    with caplog.at_level("INFO", logger="retrainer"):
        assert svc.cancel(run_id) == "canceled" and workspace.canceled == [run_id]
    ended = [r for r in caplog.records if "images are pending again" in r.getMessage()]
    assert [r.levelname for r in ended] == ["WARNING"], "a cancellation is not logged as an error"
    assert len(ledger.images.pending()) == 3 and ledger.slot.read().consecutive_failures == 0
    assert not svc.submission_state().paused, "no back-off after a cancellation"
    assert svc.cancel(run_id) == "canceled", "canceling again changes nothing"
    assert svc.cancel("run-404") is None


def test_the_cancel_route_stops_a_run(app_service: RetrainingService, workspace: FakeRunner) -> None:
    run_id = app_service.submit("manual", "t")
    response = handler("cancel_run")(request("POST", f"/api/runs/{run_id}/cancel", route_params={"run_id": run_id}))
    assert response.status_code == 200 and json.loads(response.get_body())["state"] == "canceled"
    missing = handler("cancel_run")(request("POST", "/api/runs/x/cancel", route_params={"run_id": "../x"}))
    assert missing.status_code == 404


def test_the_function_app_serves_the_status_page(
    app_service: RetrainingService, workspace: FakeRunner, datastore: BlobStore
) -> None:
    run_id = app_service.submit("manual", "for the page")
    workspace.finish(run_id, RunState.COMPLETED, DECISION)
    app_service.tick()
    datastore.write("data/label_map.json", json.dumps({"1": "Instrument/Valve/Gate valve"}).encode())
    response = handler("status_page")(request("GET", "/api/status"))
    body = response.get_body().decode()
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert run_id in body and "version <b>4</b>" in body


@pytest.mark.parametrize(
    ("event_type", "data", "reason"),
    [
        ("Microsoft.Storage.BlobCreated", {"api": ["PutBlob"], "eTag": "1"}, "not a completed upload"),
        ("Microsoft.Storage.BlobCreated", {"api": "PutBlock", "eTag": "1"}, "not a completed upload"),
        ("Microsoft.Storage.BlobCreated", {"api": "PutBlob"}, "no usable eTag"),
        ("Microsoft.MachineLearningServices.RunCompleted", {"runId": {"x": 1}}, "names no run id"),
        ("Some.Other.Event", {}, "not one the service handles"),
    ],
)
def test_every_event_becomes_one_command_or_is_ignored_with_its_reason(
    container_name: str, event_type: str, data: dict, reason: str
) -> None:
    from retrainer.events import Event, Ignored, to_command

    command = to_command(Event("1", event_type, build_subject(container_name, "data/images/a.jpg"), data))
    assert isinstance(command, Ignored) and reason in command.reason


def test_retrain_submit_goes_through_the_service_records_the_run_and_holds_the_slot(
    service_env: None, monkeypatch: pytest.MonkeyPatch, container_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manual CLI run is the service's run: recorded, holding the slot, with the pending images."""
    from retrainer import cli
    from retrainer.workspace import local as local_workspace

    runner = FakeRunner()
    monkeypatch.setattr(local_workspace, "LocalPipelineRunner", lambda root: runner)
    bootstrap.reset()
    service = bootstrap.retraining()
    for i in range(3):
        deliver(service, *blob_created(container_name, f"data/images/{i}.jpg", "0x1"))
    assert cli.main(["submit", "--backend", "local", "--reason", "try the new labels", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    record = bootstrap.ledger().runs.get(run_id)
    assert record is not None and record.trigger == "manual" and record.image_count == 3
    assert bootstrap.ledger().slot.read().active_runs == [run_id] and bootstrap.ledger().images.pending() == []
    assert cli.main(["submit", "--backend", "local"]) == 2, "the slot is taken"
    assert "not submitted" in capsys.readouterr().err
    assert cli.main(["submit", "--backend", "local", "--bypass-service"]) == 0, "the named expert path"
    assert len(runner.submitted) == 2
    bootstrap.reset()


# --- a run id the ledger cannot key, and a tick that one bad record cannot stop --------------------------


UNKEYABLE_RUN_IDS = ["run/1", "#", "why?", "back\\slash", "bell\x07", "r" * 201]


@pytest.mark.parametrize("bad_id", UNKEYABLE_RUN_IDS, ids=["slash", "hash", "question", "backslash", "control", "201"])
def test_a_run_id_the_ledger_cannot_key_is_refused_at_submission_and_frees_everything(
    make_service: MakeService, container_name: str, workspace: FakeRunner, clock: Clock, ledger: Ledger, bad_id: str
) -> None:
    from retrainer.submission import UnusableRunIdError

    svc = make_service(RETRAIN_QUIET_MINUTES="0")
    pending_three(svc, container_name)
    workspace.next_run_ids = [bad_id]
    with pytest.raises(UnusableRunIdError, match="cannot store") as refused:
        svc.submit("manual", "t")
    assert "3 images are pending again" in str(refused.value) and "canceled" in str(refused.value)
    assert workspace.canceled == [bad_id], "the backend's run is stopped, not left running unrecorded"
    assert len(ledger.images.pending()) == 3 and ledger.slot.read().active == {} and ledger.runs.newest() == []
    clock.advance(minutes=16)  # past the back-off a refused submission counts for
    outcome = svc.tick()
    assert outcome.failures == [] and outcome.submitted == "run-2"


def test_the_api_says_which_run_id_was_refused_and_holds_no_slot(
    app_service: RetrainingService, workspace: FakeRunner, ledger: Ledger
) -> None:
    workspace.next_run_ids = ["run/1"]
    response = handler("submit_run")(request("POST", "/api/runs", b"{}"))
    error = json.loads(response.get_body())["error"]
    assert response.status_code == 502 and "'run/1'" in error and "canceled" in error
    assert ledger.slot.read().active == {}
    assert handler("submit_run")(request("POST", "/api/runs", b"{}")).status_code == 202, "the slot is free"


def test_a_stale_claim_whose_run_cannot_be_keyed_is_settled_and_the_tick_goes_on(
    make_service: MakeService, container_name: str, workspace: FakeRunner, clock: Clock, ledger: Ledger
) -> None:
    """What an earlier release left behind: the backend accepted `run/1` under the claim's label, the ledger
    could not record it, and the claim kept its images."""
    from shared.records import RunStatus

    svc = make_service(RETRAIN_QUIET_MINUTES="0", RETRAIN_MAX_ACTIVE_RUNS="2")
    good = svc.submit("manual", "a run that completes")
    pending_three(svc, container_name)
    claim = ledger.slot.claim(2, clock.now)
    ledger.images.assign(ledger.images.pending(), ImageState.IN_RUN, claim)
    workspace.statuses["run/1"] = RunStatus("run/1", RunState.QUEUED, "Queued", label=f"manual: t [{claim}]")
    workspace.finish(good, RunState.COMPLETED, DECISION)
    clock.advance(minutes=16)
    outcome = svc.tick()
    assert outcome.failures == [] and outcome.followed == {good: "completed"}
    assert "run/1" in workspace.canceled and claim not in ledger.slot.read().active
    assert ledger.images.of_run(claim) == [] and champion_version(svc) == "4"
    assert svc.tick().failures == [], "and the next tick has nothing left to trip on"


def test_a_part_of_the_tick_that_fails_is_reported_and_every_other_part_still_runs(
    make_service: MakeService,
    container_name: str,
    workspace: FakeRunner,
    clock: Clock,
    ledger: Ledger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0", RETRAIN_MAX_ACTIVE_RUNS="3")
    unreadable, completing = svc.submit("manual", "its record breaks"), svc.submit("manual", "completes")
    ledger.runs.table.upsert_entity({"PartitionKey": "runs.v2", "RowKey": f"id|{unreadable}", "history": "{not json"})
    ledger.slot.claim(3, clock.now)  # a stale claim, and a workspace that cannot list its runs
    workspace.fail_list = ValueError("the workspace answered nonsense")
    workspace.finish(completing, RunState.COMPLETED, DECISION)
    pending_three(svc, container_name)
    clock.advance(minutes=16)
    with caplog.at_level("ERROR", logger="retrainer"):
        outcome = svc.tick()
    assert outcome.followed == {completing: "completed"} and champion_version(svc) == "4"
    assert outcome.submitted == "run-3", "the due batch is still submitted"
    parts = {failure.part: str(failure) for failure in outcome.failures}
    assert set(parts) == {"settle stale claims", f"follow run {unreadable}"}
    assert "the workspace answered nonsense" in parts["settle stale claims"]
    assert f"follow run {unreadable}" in caplog.text, "each failure is logged with what it was doing"


def test_a_failing_part_of_the_tick_is_logged_with_where_it_failed_and_no_secret(
    make_service: MakeService, container_name: str, workspace: FakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    svc = make_service(RETRAIN_QUIET_MINUTES="0")
    pending_three(svc, container_name)
    workspace.fail_submit = RuntimeError("denied: AccountKey=c2VjcmV0 https://x/?sig=abc")
    with caplog.at_level("INFO"):
        outcome = svc.tick()
    (failure,) = outcome.failures
    assert failure.part == "submit a due batch" and "(at fakes.py:" in str(failure) and "denied" in str(failure)
    assert "submit a due batch" in caplog.text and len(svc._ledger.images.pending()) == 3
    text = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert "c2VjcmV0" not in text and "sig=abc" not in text


def test_the_timer_handler_raises_after_the_whole_tick_when_a_part_failed(
    app_service: RetrainingService, workspace: FakeRunner, ledger: Ledger, clock: Clock
) -> None:
    """The host then records the invocation as failed; the rest of the tick's work is done."""
    run_id = app_service.submit("manual", "t")
    workspace.finish(run_id, RunState.COMPLETED, DECISION)
    ledger.runs.table.upsert_entity({"PartitionKey": "runs.v2", "RowKey": "id|run-77", "history": "{not json"})
    ledger.slot.update(lambda control: control.active.update({"run-77": clock.now.isoformat()}))
    with pytest.raises(RuntimeError, match="follow run run-77"):
        handler("monitor")(TimerRequest(past_due=False))
    assert stored_run(ledger, run_id).state == "completed"


# --- simultaneous submissions: the loser gets a conflict and holds nothing --------------------------------


def pending_images(svc: RetrainingService, container_name: str, count: int) -> None:
    for i in range(count):
        deliver(svc, *blob_created(container_name, f"data/images/many/{i}.jpg", "0x1"))


def test_the_loser_of_a_race_for_the_pending_images_gets_a_conflict_and_holds_nothing(
    make_service: MakeService,
    container_name: str,
    workspace: FakeRunner,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both had a slot and read the same pending images; the winner moved the later ones first, so the loser's
    first transaction lands and its second fails."""
    from retrainer.submission import SubmissionConflict

    svc = make_service(RETRAIN_MAX_ACTIVE_RUNS="2")
    pending_images(svc, container_name, 120)
    seen_by_both = ledger.images.pending()
    ledger.images.assign(seen_by_both[50:], ImageState.IN_RUN, "claim-winner")
    with monkeypatch.context() as stale:
        stale.setattr(ledger.images, "pending", lambda: seen_by_both)
        with pytest.raises(SubmissionConflict, match="another submission took the pending images"):
            svc.submit("manual", "at the same moment")
    assert workspace.submitted == [] and ledger.slot.read().active == {}
    assert len(ledger.images.pending()) == 50 and len(ledger.images.of_run("claim-winner")) == 70


def test_the_api_answers_409_to_the_loser_of_a_race(
    make_service: MakeService,
    container_name: str,
    workspace: FakeRunner,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = make_service(RETRAIN_MAX_ACTIVE_RUNS="2")
    pending_images(svc, container_name, 3)
    seen_by_both = ledger.images.pending()
    ledger.images.assign(seen_by_both, ImageState.IN_RUN, "claim-winner")
    with monkeypatch.context() as patch:
        patch.setattr(bootstrap, "retraining", lambda: svc)
        patch.setattr(ledger.images, "pending", lambda: seen_by_both)
        response = handler("submit_run")(request("POST", "/api/runs", b'{"reason": "me too"}'))
    assert response.status_code == 409, response.get_body()
    assert "another submission took the pending images" in json.loads(response.get_body())["error"]
    assert ledger.slot.read().active == {} and workspace.submitted == []


def test_an_automatic_submission_that_finds_its_batch_taken_submits_nothing(
    make_service: MakeService,
    container_name: str,
    workspace: FakeRunner,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another instance submitted the due batch between this one's look and its claim."""
    svc = make_service(RETRAIN_QUIET_MINUTES="0", RETRAIN_MAX_ACTIVE_RUNS="2")
    pending_three(svc, container_name)
    real_pending = ledger.images.pending
    looks: list[int] = []

    def taken_after_the_look() -> list:
        looks.append(1)
        if len(looks) == 2:  # the claim's read: the other instance took them in between
            ledger.images.assign(real_pending(), ImageState.IN_RUN, "claim-other")
        return real_pending()

    monkeypatch.setattr(ledger.images, "pending", taken_after_the_look)
    assert svc.submit_if_due("timer") is None
    assert workspace.submitted == [] and ledger.slot.read().active == {}


def test_simultaneous_submissions_with_two_slots_leave_no_claim_and_no_image_twice(
    make_service: MakeService, container_name: str, workspace: FakeRunner, ledger: Ledger
) -> None:
    from retrainer.submission import SubmissionConflict

    svc = make_service(RETRAIN_MAX_ACTIVE_RUNS="2")
    pending_images(svc, container_name, 120)
    outcomes = at_once([lambda: svc.submit("manual", "race")] * 6)
    submitted = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, SlotTaken | SubmissionConflict)]
    active = ledger.slot.read().active
    assert len(submitted) + len(refused) == 6 and set(active) == set(ledger.slot.read().active_runs), (
        "no claim is left behind"
    )
    assert sorted(active) == sorted(submitted) == sorted(workspace.statuses)
    held = [image.path for run_id in active for image in ledger.images.of_run(run_id)]
    pending = [image.path for image in ledger.images.pending()]
    assert sorted(held + pending) == sorted(f"data/images/many/{i}.jpg" for i in range(120))
