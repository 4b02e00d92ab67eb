"""The ledger's keys: every frequent read is a key range; a ledger of the first layout migrates in place, once."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables import (
    TableEntity,
    TableErrorCode,
    TableServiceClient,
    TableTransactionError,
    TransactionOperation,
)

from retrainer.ledger import Ledger
from retrainer.ledger.images import ImageState
from retrainer.ledger.rows import TableService, row_key
from retrainer.ledger_migration import Migration, ensure_current_layout, migrate_first_layout
from shared.records import RunRecord, RunState
from tests.fakes import InMemoryTableService, promotion_with_classes
from tests.helpers import class_guard, stored_run

START = datetime(2026, 1, 1, tzinfo=UTC)


def run_record(index: int) -> RunRecord:
    submitted = START + timedelta(minutes=index)
    return RunRecord(f"run-{index:05d}", "timer", "new images", 3, RunState.COMPLETED, submitted)


def test_the_newest_runs_come_first_and_only_as_many_as_asked() -> None:
    """In memory, with the fake that refuses any filter on a non-key property."""
    ledger = Ledger(InMemoryTableService(), "t")
    for index in (3, 1, 4, 0, 2):
        ledger.runs.save(run_record(index))
    assert [r.run_id for r in ledger.runs.newest(limit=3)] == ["run-00004", "run-00003", "run-00002"]
    again = run_record(1)
    again.state = RunState.FAILED
    ledger.runs.save(again)
    assert [r.run_id for r in ledger.runs.newest(limit=10)] == [f"run-{i:05d}" for i in (4, 3, 2, 1, 0)]
    assert (
        stored_run(ledger, "run-00001").state == RunState.FAILED and ledger.runs.newest(10)[3].state == RunState.FAILED
    )


def test_images_move_between_states_and_each_state_is_one_key_range() -> None:
    ledger = Ledger(InMemoryTableService(), "t")
    for i in range(5):
        assert ledger.images.record(f"data/images/{i}.jpg", f"0x{i}", START)
    assert not ledger.images.record("data/images/0.jpg", "0x0", START), "a redelivered event records nothing"
    held = ledger.images.assign(ledger.images.pending()[:3], ImageState.IN_RUN, "run-1")
    assert len(ledger.images.pending()) == 2 and {i.path for i in ledger.images.of_run("run-1")} == {
        i.path for i in held
    }
    ledger.images.assign(held, ImageState.TRAINED, "run-1")
    assert ledger.images.of_run("run-1") == [] and len(ledger.images.of_run("run-1", ImageState.TRAINED)) == 3
    assert len(ledger.images.all()) == 5


def test_moving_an_image_someone_else_moved_fails_instead_of_overwriting() -> None:
    from retrainer.ledger.images import ImagesMoved

    ledger = Ledger(InMemoryTableService(), "t")
    for i in range(60):
        ledger.images.record(f"data/images/{i}.jpg", "0x1", START)
    stale = ledger.images.pending()
    ledger.images.assign(stale[50:], ImageState.IN_RUN, "run-1")
    with pytest.raises(ImagesMoved, match="10 of 60 images could not be moved") as moved:
        ledger.images.assign(stale, ImageState.IN_RUN, "run-2")
    assert len(ledger.images.of_run("run-1")) == 10 and ledger.images.of_run("run-2") == moved.value.moved
    assert len(moved.value.moved) == 50, "the first transaction landed; the caller gets what it moved"


def write_first_layout(service: TableService, prefix: str, images: int, runs: int) -> None:
    """Rows exactly as the first layout wrote them: one partition each, state and run as properties."""
    image_table, run_table = (service.get_table_client(f"{prefix}{name}") for name in ("images", "runs"))
    for table in (image_table, run_table):
        with contextlib.suppress(ResourceExistsError):  # the current layout's tables may be there already
            table.create_table()
    for i in range(images):
        state = ImageState.PENDING if i % 3 == 0 else ImageState.IN_RUN if i % 3 == 1 else ImageState.TRAINED
        image_table.create_entity(
            {
                "PartitionKey": "images",
                "RowKey": row_key(f"data/images/{i}.jpg@0x{i}"),
                "path": f"data/images/{i}.jpg",
                "etag": f"0x{i}",
                "seen": START,
                "state": state,
                "run_id": "" if state == ImageState.PENDING else "run-00001",
            }
        )
    for i in range(runs):
        record = run_record(i)
        run_table.create_entity(
            {
                "PartitionKey": "runs",
                "RowKey": record.run_id,
                "trigger": record.trigger,
                "reason": record.reason,
                "image_count": record.image_count,
                "state": record.state.value,
                "submitted_at": record.submitted_at,
                "history": json.dumps([]),
                "error": "",
                "decision": "",
                "ended_at": "",
                "deadline": "",
                "promotion_done": True,
            }
        )


@pytest.mark.usefixtures("service_env")
def test_a_ledger_of_the_first_layout_migrates_in_place_without_losing_a_record(
    connection_string: str, table_prefix: str
) -> None:
    service = TableServiceClient.from_connection_string(connection_string)
    write_first_layout(service, table_prefix, images=250, runs=40)
    ledger = Ledger.from_connection_string(connection_string, table_prefix)
    ledger.ensure_tables()
    assert ensure_current_layout(ledger) == Migration(retired=290, left=0)
    assert len(ledger.images.pending()) == 84 and len(ledger.images.of_run("run-00001")) == 83
    assert len(ledger.images.of_run("run-00001", ImageState.TRAINED)) == 83 and len(ledger.images.all()) == 250
    assert [r.run_id for r in ledger.runs.newest(limit=3)] == ["run-00039", "run-00038", "run-00037"]
    assert ledger.runs.get("run-00007") is not None and len(ledger.runs.newest(limit=100)) == 40
    assert migrate_first_layout(ledger) == Migration(0, 0), "a second pass finds nothing left"
    assert ensure_current_layout(ledger) is None, "and the marked ledger is not scanned again"
    assert not ledger.images.record("data/images/3.jpg", "0x3"), "migrated images still refuse duplicates"


# --- migration against a live service: never a second state for an image, never an older run -------------


@pytest.fixture(params=["memory", "azurite"])
def table_service(request: pytest.FixtureRequest) -> TableService:
    """One table service for the legacy writer and every ledger instance: in memory or on Azurite."""
    if request.param == "memory":
        return InMemoryTableService()
    return TableServiceClient.from_connection_string(request.getfixturevalue("connection_string"))


def state_rows_per_image(ledger: Ledger) -> dict[str, int]:
    counts: dict[str, int] = {}
    for image in ledger.images.all():
        counts[image.path] = counts.get(image.path, 0) + 1
    return counts


def test_a_migration_resumed_after_the_service_moved_images_writes_no_second_state(
    table_service: TableService, table_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after its first transaction (new rows written, legacy rows not yet deleted), then a
    submission takes the pending images, then the migration runs again (the next cold start)."""
    write_first_layout(table_service, table_prefix, images=120, runs=0)
    ledger = Ledger(table_service, table_prefix)
    ledger.ensure_tables()
    with monkeypatch.context() as crash:
        crash.setattr(
            ledger.images.table, "delete_entity", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("gone"))
        )
        with pytest.raises(ConnectionError):
            ensure_current_layout(ledger)
    taken = ledger.images.assign(ledger.images.pending(), ImageState.IN_RUN, "claim-0123")
    assert taken, "the first transaction's pending images were in the new layout"
    assert ensure_current_layout(ledger) == Migration(retired=120, left=0), "unmarked: the next cold start resumes"
    assert state_rows_per_image(ledger) == {f"data/images/{i}.jpg": 1 for i in range(120)}
    assert len(ledger.images.of_run("claim-0123")) == len(taken), "the submission keeps what it took"
    assert len(ledger.images.pending()) + len(taken) == 40
    assert migrate_first_layout(ledger) == Migration(0, 0)


def test_two_instances_migrating_at_once_never_undo_what_the_service_did_in_between(
    table_service: TableService, table_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cold starts during a deploy: B reads the legacy rows, A migrates them all, the service moves
    images and finishes a run, then B writes what it read."""
    write_first_layout(table_service, table_prefix, images=90, runs=5)
    first, second = Ledger(table_service, table_prefix), Ledger(table_service, table_prefix)
    legacy = {
        name: list(table_service.get_table_client(f"{table_prefix}{name}").query_entities(f"PartitionKey eq '{name}'"))
        for name in ("images", "runs")
    }
    first.ensure_tables()
    ensure_current_layout(first)
    taken = first.images.assign(first.images.pending(), ImageState.IN_RUN, "claim-4567")
    moved_on = stored_run(first, "run-00002")
    moved_on.state, moved_on.error = RunState.FAILED, "failed after the migration"
    first.runs.save(moved_on)
    for name, table in (("images", second.images.table), ("runs", second.runs.table)):
        real_query = table.query_entities

        def stale_read(
            query_filter: str,
            *args: object,
            _name: str = name,
            _real: Callable[..., Iterable[TableEntity]] = real_query,
            **kwargs: object,
        ) -> Iterable[TableEntity]:
            if query_filter == f"PartitionKey eq '{_name}'":
                return iter(legacy[_name])  # what B read before A finished
            return _real(query_filter, *args, **kwargs)

        monkeypatch.setattr(table, "query_entities", stale_read)
    migrate_first_layout(second)
    assert state_rows_per_image(second) == {f"data/images/{i}.jpg": 1 for i in range(90)}
    assert len(second.images.of_run("claim-4567")) == len(taken) == 30 and second.images.pending() == []
    assert stored_run(second, "run-00002").state == RunState.FAILED, "a legacy copy never overwrites a newer record"
    assert len(second.runs.newest(limit=100)) == 5


def test_the_hot_path_never_reads_the_first_layout_once_the_ledger_is_marked(
    table_service: TableService, table_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold start makes the tables and reads the layout marker: one point read, no partition scanned."""
    write_first_layout(table_service, table_prefix, images=3, runs=2)
    ledger = Ledger(table_service, table_prefix)
    ledger.ensure_tables()
    assert ensure_current_layout(ledger) == Migration(retired=5, left=0)
    for table in (ledger.images.table, ledger.runs.table):
        monkeypatch.setattr(table, "query_entities", lambda *a, **k: pytest.fail("a partition was scanned"))
    ledger.ensure_tables()
    assert ensure_current_layout(ledger) is None


def test_a_legacy_row_that_cannot_be_read_stays_and_keeps_the_ledger_unmarked(
    table_service: TableService, table_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_first_layout(table_service, table_prefix, images=4, runs=1)
    legacy_images = table_service.get_table_client(f"{table_prefix}images")
    legacy_images.upsert_entity({"PartitionKey": "images", "RowKey": "broken", "path": "data/images/x.jpg"})
    ledger = Ledger(table_service, table_prefix)
    ledger.ensure_tables()
    with caplog.at_level("ERROR", logger="retrainer"):
        assert ensure_current_layout(ledger) == Migration(retired=5, left=1)
    assert "legacy image row 'broken' cannot be migrated and stays" in caplog.text
    assert len(ledger.images.all()) == 4
    assert ensure_current_layout(ledger) == Migration(retired=0, left=1), "unmarked: tried again, nothing lost"
    legacy_images.delete_entity("images", "broken")  # the operator's repair
    assert ensure_current_layout(ledger) == Migration(retired=0, left=0)
    assert ensure_current_layout(ledger) is None


@pytest.mark.usefixtures("service_env")
def test_retrain_migrate_ledger_moves_rows_written_after_the_ledger_was_marked(
    connection_string: str, table_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An instance of a first-layout release wrote during a deploy, after the service had marked the ledger."""
    from retrainer import bootstrap, cli

    ledger = bootstrap.ledger()  # makes the tables, finds nothing to migrate, marks the ledger
    assert ensure_current_layout(ledger) is None
    write_first_layout(TableServiceClient.from_connection_string(connection_string), table_prefix, images=6, runs=2)
    assert cli.main(["migrate-ledger", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"retired": 8, "left": 0}
    assert len(ledger.images.all()) == 6 and len(ledger.runs.newest(limit=10)) == 2


@pytest.mark.usefixtures("service_env")
def test_retrain_migrate_ledger_on_an_unmarked_ledger_reports_the_rows_it_moved(
    connection_string: str, table_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from retrainer import cli

    write_first_layout(TableServiceClient.from_connection_string(connection_string), table_prefix, images=6, runs=2)
    assert cli.main(["migrate-ledger", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"retired": 8, "left": 0}


# --- every row fits: Table Storage refuses a string over 64 KiB and an entity over 1 MiB -------------------


@pytest.mark.parametrize("text", ["x" * 32_769, "\N{GRINNING FACE}" * 16_385], ids=["32,769 characters", "astral"])
def test_the_fake_refuses_a_property_over_64_kib_as_azurite_does(
    table_service: TableService, table_prefix: str, text: str
) -> None:
    """The in-memory tables keep Table Storage's limit, so the fast tier cannot pass what the service refuses."""
    table = table_service.get_table_client(f"{table_prefix}limits")
    table.create_table()
    table.upsert_entity({"PartitionKey": "p", "RowKey": "fits", "text": "x" * 32_768})
    with pytest.raises(HttpResponseError) as refused:
        table.upsert_entity({"PartitionKey": "p", "RowKey": "too-long", "text": text})
    assert getattr(refused.value, "error_code", None) == TableErrorCode.PROPERTY_VALUE_TOO_LARGE
    with pytest.raises(TableTransactionError) as refused_in_a_batch:
        table.submit_transaction([(TransactionOperation.UPSERT, {"PartitionKey": "p", "RowKey": "b", "text": text})])
    assert getattr(refused_in_a_batch.value, "error_code", None) == "PropertyValueTooLarge"


def hostile_run(decision_classes: int) -> RunRecord:
    """A run with every text at its worst: a long history of details full of quotes, control and astral
    characters (which JSON escapes to 2, 6 and 12 characters), such an error, and a decision of many classes."""
    worst = '"\\\x01\N{GRINNING FACE}' * 200
    run = RunRecord("run-hostile", "timer", worst, 3, RunState.QUEUED, START, error=worst * 10)
    for minute in range(120):
        run.enter(RunState.RUNNING if minute % 2 else RunState.QUEUED, START + timedelta(minutes=minute), worst)
    run.enter(RunState.COMPLETED, START + timedelta(hours=3), "Completed")
    run.decision = promotion_with_classes(decision_classes)
    return run


def test_a_run_with_every_text_at_its_worst_is_written_and_read_back(
    table_service: TableService, table_prefix: str
) -> None:
    ledger = Ledger(table_service, table_prefix)
    ledger.ensure_tables()
    run = hostile_run(decision_classes=400)
    ledger.runs.save(run)
    stored = ledger.runs.get(run.run_id)
    assert stored is not None and stored.state == RunState.COMPLETED
    assert stored.decision == run.decision, "a record of 400 classes is kept whole"
    when = [(entry["state"], entry["at"]) for entry in stored.history]
    assert when[0] == (RunState.QUEUED, START.isoformat()) and when[-1][0] == RunState.COMPLETED
    assert 1 < len(stored.history) < len(run.history), "the first entry and the latest that fit"
    assert stored.error and stored.reason and len(stored.reason) <= 500
    assert [r.run_id for r in ledger.runs.newest()] == [run.run_id]


def test_a_decision_of_thousands_of_classes_keeps_the_verdict_and_every_class_that_fell(
    table_service: TableService, table_prefix: str
) -> None:
    ledger = Ledger(table_service, table_prefix)
    ledger.ensure_tables()
    run = hostile_run(decision_classes=5000)
    guard = class_guard(run.decision)
    fallen = guard.classes[1234]
    fallen.champion_ap, fallen.challenger_ap = 0.9, 0.2
    fallen.interval = fallen.interval.model_copy(update={"difference": -0.7, "low": -0.8, "high": -0.6})
    fallen.instances = 50
    ledger.runs.save(run)
    stored = ledger.runs.get(run.run_id)
    assert stored is not None and stored.decision is not None
    kept = class_guard(stored.decision)
    assert kept.regressions() == [fallen]
    assert 0 < len(kept.classes) < 5000 and len(kept.classes) + kept.classes_left_out == 5000
    assert set(stored.decision.challenger_per_class) == {c.class_id for c in kept.classes}
    verdict = ("name", "challenger_version", "best_version", "promoted", "challenger_score", "reason")
    assert all(getattr(stored.decision, field) == getattr(run.decision, field) for field in verdict)
