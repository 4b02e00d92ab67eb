"""The runs table: the service's record of each run, newest first in one key range.

Each run has a row `id|<run id>` (point reads, ETag-guarded writes) and a copy `time|<inverted submit time>|<run
id>`, written in the same transaction, so the newest N runs are the first N rows of one range. A record always
fits its row: texts are bounded, the history keeps its first and latest entries, and the decision is cut over a
few properties (`retrainer/ledger/decision.py`). A row this release cannot read is reported as such, never
acted on.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import datetime
from typing import cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, TransactionOperation, UpdateMode

from retrainer.events import is_run_id
from retrainer.ledger.decision import decision_properties, stored_decision
from retrainer.ledger.rows import (
    MAX_ERROR_CHARS,
    MAX_REASON_CHARS,
    Table,
    ascii_json,
    bounded,
    error_code,
    literal,
    newest_first,
    prefix_range,
)
from shared.promotion import PromotionRecord
from shared.records import RunEvent, RunRecord, RunState, UnreadableRun

PARTITION = "runs.v2"
MAX_HISTORY = 50
#: A run's status history, as JSON: its first entry and as many of the latest as fit.
MAX_HISTORY_CHARS = 24_000


class UnreadableRunError(ValueError):
    """A run's row this release cannot read (`row` says which and why)."""

    def __init__(self, row: UnreadableRun) -> None:
        super().__init__(f"run {row.run_id}: {row.problem}")
        self.row = row


class RunLedger:
    """The runs table's client."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def save(self, run: RunRecord, etag: str | None = None) -> None:
        """Write a run; with `etag`, only if nobody changed it since it was read (ResourceModifiedError).

        Texts are bounded and the history keeps its first and latest entries, so a record always fits.
        """
        entity, by_time = _run_entities(run)
        first = (
            (TransactionOperation.UPSERT, entity, {"mode": UpdateMode.REPLACE})
            if etag is None
            else (
                TransactionOperation.UPDATE,
                entity,
                {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified},
            )
        )
        try:
            self.table.submit_transaction([first, (TransactionOperation.UPSERT, by_time, {"mode": UpdateMode.REPLACE})])
        except TableTransactionError as error:
            if error_code(error) in ("UpdateConditionNotSatisfied", "ConditionNotMet"):
                raise ResourceModifiedError(f"run {run.run_id} changed since it was read") from error
            raise

    def insert_once(self, run: RunRecord) -> bool:
        """Write a run only if the ledger has no record of it: False (and nothing written) when it has one."""
        entity, by_time = _run_entities(run)
        try:
            self.table.submit_transaction(
                [
                    (TransactionOperation.CREATE, entity),
                    (TransactionOperation.UPSERT, by_time, {"mode": UpdateMode.REPLACE}),
                ]
            )
        except TableTransactionError as error:
            if error_code(error) != "EntityAlreadyExists":
                raise
            return False
        return True

    def get(self, run_id: str) -> RunRecord | None:
        """The run's record; None when there is none, UnreadableRunError when this release cannot read it."""
        found = self.get_with_etag(run_id)
        return found[0] if found else None

    def get_with_etag(self, run_id: str) -> tuple[RunRecord, str] | None:
        """The run's record and its row's ETag; None when there is none, UnreadableRunError when this release
        cannot read it."""
        if not is_run_id(run_id):
            return None
        try:
            entity = self.table.get_entity(PARTITION, f"id|{run_id}")
        except ResourceNotFoundError:
            return None
        return run_from_row(entity), str(entity.metadata["etag"])

    def newest(self, limit: int = 50) -> list[RunRecord]:
        """The runs this release can read among the newest `limit`, newest first: what the service acts on."""
        return [run for run in self.rows(limit) if isinstance(run, RunRecord)]

    def rows(self, limit: int = 50) -> list[RunRecord | UnreadableRun]:
        """The newest `limit` runs, newest first, a row this release cannot read as such (what people are
        shown): the first rows of one key range, read a page at a time."""
        query = f"PartitionKey eq {literal(PARTITION)} and {prefix_range('time|')}"
        pages = self.table.query_entities(query, results_per_page=min(max(limit, 1), 1000))
        rows: list[RunRecord | UnreadableRun] = []
        for entity in itertools.islice(pages, limit):
            try:
                rows.append(run_from_row(entity))
            except UnreadableRunError as unreadable:
                rows.append(unreadable.row)
        return rows


def _run_entities(run: RunRecord) -> tuple[dict, dict]:
    """A run's `id|` row and its `time|` copy; ValueError for an id that cannot be a key."""
    if not is_run_id(run.run_id):
        raise ValueError(f"not a run id: {bounded(run.run_id, 80)!r}")
    entity = {
        "PartitionKey": PARTITION,
        "RowKey": f"id|{run.run_id}",
        "run_id": run.run_id,
        "trigger": bounded(run.trigger, 40),
        "reason": bounded(run.reason, MAX_REASON_CHARS),
        "image_count": run.image_count,
        "state": run.state.value,
        "submitted_at": run.submitted_at,
        "history": _bounded_history(run.history),
        "error": bounded(run.error, MAX_ERROR_CHARS),
        **decision_properties(run.decision),
        "ended_at": run.ended_at.isoformat() if run.ended_at else "",
        "deadline": run.deadline.isoformat() if run.deadline else "",
        "promotion_done": run.promotion_done,
    }
    return entity, {**entity, "RowKey": f"time|{newest_first(run.submitted_at)}|{run.run_id}"}


def _bounded_history(history: list[RunEvent]) -> str:
    """The history as JSON: its first entry and the latest ones, as many as `MAX_HISTORY` and the property allow."""
    entries = [{key: bounded(str(value), MAX_REASON_CHARS) for key, value in entry.items()} for entry in history]
    kept = entries if len(entries) <= MAX_HISTORY else entries[:1] + entries[-MAX_HISTORY + 1 :]
    while len(kept) > 1 and len(ascii_json(kept)) > MAX_HISTORY_CHARS:
        del kept[1]  # the oldest after the first: when it started and where it is now stay
    return ascii_json(kept)


def _history(stored: str) -> list[RunEvent]:
    """A run's history as stored (JSON), each entry's state typed again."""
    return [cast(RunEvent, {**entry, "state": RunState(entry["state"])}) for entry in json.loads(stored)]


def run_from_row(entity: dict) -> RunRecord:
    """A run from its row; UnreadableRunError for a row this release cannot read (a state a newer release
    wrote, or a damaged row), which its callers skip instead of failing on."""
    try:
        return _run_from_row(entity)
    except (KeyError, ValueError, TypeError) as error:  # ValueError: pydantic's and JSON's errors too
        raise UnreadableRunError(_unreadable_run(entity, error)) from error


def _unreadable_run(entity: dict, error: Exception) -> UnreadableRun:
    run_id = str(entity.get("run_id") or str(entity.get("RowKey", "")).rsplit("|", 1)[-1])
    run = UnreadableRun(bounded(run_id, 200), bounded(str(entity.get("state", "")), 40), "")
    if run.of_a_newer_release:
        known = ", ".join(state.value for state in RunState)
        problem = (
            f"its state {run.stored_state!r} is not one this release knows ({known}); a newer release may have "
            "written it: left as it is"
        )
    else:
        first_line = (str(error).strip().splitlines() or [""])[0]
        problem = f"its row is damaged ({type(error).__name__}: {bounded(first_line, 200)}): left as it is"
    return dataclasses.replace(run, problem=problem)


def _run_from_row(entity: dict) -> RunRecord:
    ended = entity.get("ended_at") or ""
    decision = stored_decision(entity)
    decision = "" if decision == "{}" else decision  # rows written before the record was typed
    return RunRecord(
        run_id=entity["run_id"],
        trigger=entity["trigger"],
        reason=entity["reason"],
        image_count=int(entity["image_count"]),
        state=RunState(entity["state"]),
        submitted_at=entity["submitted_at"],
        history=_history(entity["history"]),
        error=entity.get("error", ""),
        decision=PromotionRecord.from_json(decision) if decision else None,
        ended_at=datetime.fromisoformat(ended) if ended else None,
        deadline=datetime.fromisoformat(entity["deadline"]) if entity.get("deadline") else None,
        promotion_done=bool(entity.get("promotion_done", False)),
    )
