"""Service state in Azure Table Storage (Azurite locally): images, runs, the submission slot, waiting labels.

Tables are named `<LEDGER_TABLE_PREFIX><name>`. Rows of images and labels are keyed by a hash of the
path (Table Storage forbids '/', '\\', '#' and '?' in keys and limits them to 1 KiB; a legal blob name
is longer), with the path stored as a property. Every write that must not race is conditional on an
ETag (or an insert that fails when the row exists), so concurrent handlers on many instances agree.
Every text that reaches a row is bounded, so no input can make a record unwritable.

Every frequent read is a key range, so its cost does not grow with history (Table Storage answers a
filter on any other property by scanning the whole partition). Images live in one partition: an
identity row `id|<hash>` (inserted once, so a duplicate event is refused) and a state row whose key
starts with the state, `pending|<hash>`, `run|<run id>|<hash>` or `trained|<run id>|<hash>`; a move
deletes one state row and inserts the next in one same-partition transaction. Runs have a row
`id|<run id>` (point reads, ETag-guarded writes) and a copy `time|<inverted submit time>|<run id>`,
written in the same transaction, so the newest N runs are the first N rows of one range. A ledger
written with the first layout is moved into this one by `retrainer/ledger_migration.py`, once, outside
the hot path; nothing here reads that layout. The champion's history (each promotion, automatic or by
hand, each rollback and pin) is one partition keyed by inverted time, so the latest entries are the first
rows of one range.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import (
    TableClient,
    TableServiceClient,
    TableTransactionError,
    TransactionOperation,
    UpdateMode,
)

from retrainer.datastore import TABLE_CLIENT_OPTIONS
from retrainer.events import is_run_id
from retrainer.identity import signed_in_credential
from retrainer.promotion import PromotionRecord
from retrainer.records import RunEvent, RunRecord, RunState, UnreadableRun
from retrainer.settings import Settings

_WAITING = "waiting"
_IMAGES = "images.v2"
_RUNS = "runs.v2"
#: The largest submit time in milliseconds that keys runs newest first (year 2286).
_TIME_CEILING_MS = 10**13
_CONTROL = "control"
_CHAMPION = "champion"
_SLOT = "submission"
_CLAIM_PREFIX = "claim-"
_BATCH = 100  # Table Storage's transaction limit
#: A claim whose submitter vanished is settled after this (the service adopts its run or frees its images).
STALE_CLAIM = timedelta(minutes=15)


#: Bounds on text the ledger stores (Table Storage's string properties hold at most 64 KiB of UTF-16, 32K
#: characters, and an entity at most 1 MiB).
MAX_REASON_CHARS = 500
MAX_ERROR_CHARS = 4000
MAX_HISTORY = 50
MAX_EVIDENCE_CHARS = 2000
#: What the ledger puts in one property: JSON it writes is ASCII (`json.dumps` escapes the rest), one UTF-16 unit
#: a character, so this is under 64 KiB with a margin (the limit is 32,768).
PROPERTY_CHARS = 32_000
#: A run's status history, as JSON: its first entry and as many of the latest as fit.
MAX_HISTORY_CHARS = 24_000
#: A run's decision (the tag step's record), as JSON over at most this many properties (512 KiB): a record of a
#: few hundred classes fits whole; a longer one keeps every class that fell and as many others as fit.
DECISION_PROPERTIES = 8
_CONTROL_ATTEMPTS = 50


def row_key(text: str) -> str:
    """A bounded, key-safe row key for any path."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ascii_json(value: object) -> str:
    """JSON of ASCII characters only, so its length is its size in a table property (one UTF-16 unit each)."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


def _bounded_history(history: list[RunEvent]) -> str:
    """The history as JSON: its first entry and the latest ones, as many as `MAX_HISTORY` and the property allow."""
    entries = [{key: bounded(str(value), MAX_REASON_CHARS) for key, value in entry.items()} for entry in history]
    kept = entries if len(entries) <= MAX_HISTORY else entries[:1] + entries[-MAX_HISTORY + 1 :]
    while len(kept) > 1 and len(ascii_json(kept)) > MAX_HISTORY_CHARS:
        del kept[1]  # the oldest after the first: when it started and where it is now stay
    return ascii_json(kept)


def _decision_text(decision: PromotionRecord) -> str:
    """The decision as ASCII JSON within `DECISION_PROPERTIES` properties.

    Whole when it fits (inf and NaN as the strings the record writes). A longer one (a label map of thousands of
    classes) keeps every guarded class that fell, then the classes that changed most, as many as fit, and says in
    `classes_left_out` how many it left out; the run's own record in the workspace holds them all.
    """
    limit = DECISION_PROPERTIES * PROPERTY_CHARS
    text = ascii_json(json.loads(decision.model_dump_json()))
    guard = decision.comparison.class_guard
    if len(text) <= limit or guard is None:
        return text if len(text) <= limit else _minimal_decision_text(decision)
    fallen = guard.regressions()
    ranked = fallen + sorted(
        (c for c in guard.classes if c not in fallen), key=lambda c: abs(c.challenger_ap - c.champion_ap), reverse=True
    )
    keep = len(ranked)
    while keep > 0:
        keep //= 2
        kept = ranked[:keep]
        ids = {c.class_id for c in kept}
        shortened = decision.model_copy(
            update={
                "comparison": decision.comparison.model_copy(
                    update={
                        "class_guard": guard.model_copy(
                            update={"classes": kept, "classes_left_out": guard.classes_left_out + len(ranked) - keep}
                        )
                    }
                ),
                "candidate_per_class": {c: v for c, v in decision.candidate_per_class.items() if c in ids},
                "previous_per_class": {c: v for c, v in decision.previous_per_class.items() if c in ids},
            }
        )
        text = ascii_json(json.loads(shortened.model_dump_json()))
        if len(text) <= limit:
            return text
    return _minimal_decision_text(decision)


def _minimal_decision_text(decision: PromotionRecord) -> str:
    """The verdict alone (who, which versions, the scores, the reason bounded): what the service acts on."""
    minimal = PromotionRecord(
        name=bounded(decision.name, 200),
        candidate_version=bounded(decision.candidate_version, 200),
        previous_best_version=decision.previous_best_version and bounded(decision.previous_best_version, 200),
        chosen_version=bounded(decision.chosen_version, 200),
        best_version=decision.best_version and bounded(decision.best_version, 200),
        promoted=decision.promoted,
        candidate_score=decision.candidate_score,
        previous_best_score=decision.previous_best_score,
        min_map_improvement=decision.min_map_improvement,
        reason=bounded(decision.reason, MAX_ERROR_CHARS),
        candidate_report=decision.candidate_report and bounded(decision.candidate_report, MAX_EVIDENCE_CHARS),
    )
    return ascii_json(json.loads(minimal.model_dump_json()))  # every field bounded: a few pieces at most


def _decision_properties(decision: PromotionRecord | None) -> dict[str, str]:
    """`decision`, `decision_1`, ...: the decision's JSON cut into pieces a property holds."""
    text = _decision_text(decision) if decision else ""
    pieces = [text[start : start + PROPERTY_CHARS] for start in range(0, len(text), PROPERTY_CHARS)] or [""]
    return {("decision" if index == 0 else f"decision_{index}"): piece for index, piece in enumerate(pieces)}


def _stored_decision(entity: dict) -> str:
    """The decision's JSON from its pieces (a row written before decisions were cut holds one)."""
    pieces = [entity.get("decision") or ""]
    while f"decision_{len(pieces)}" in entity:
        pieces.append(entity[f"decision_{len(pieces)}"])
    return "".join(pieces)


def _image_key(path: str, etag: str) -> str:
    return row_key(f"{path}@{etag.strip(chr(34))}")


def _literal(value: str) -> str:
    """An OData string literal."""
    return "'" + value.replace("'", "''") + "'"


def _prefix_range(prefix: str) -> str:
    """A RowKey range filter for every key that starts with `prefix` ('|' + 1 is '}')."""
    return f"RowKey ge {_literal(prefix)} and RowKey lt {_literal(prefix[:-1] + chr(ord(prefix[-1]) + 1))}"


def _state_row(image_hash: str, state: ImageState, run_id: str) -> str:
    if state == ImageState.PENDING:
        return f"{ImageState.PENDING}|{image_hash}"
    return f"{'run' if state == ImageState.IN_RUN else ImageState.TRAINED}|{run_id}|{image_hash}"


def _run_time_key(run: RunRecord) -> str:
    inverted = _TIME_CEILING_MS - int(run.submitted_at.timestamp() * 1000)
    return f"time|{inverted:013d}|{run.run_id}"


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WaitingLabel:
    stem: str
    label_path: str
    since: datetime


class ImageState(enum.StrEnum):
    """Where an image is: waiting for a run, held by a run (or a claim), or trained on."""

    PENDING = "pending"
    IN_RUN = "in_run"
    TRAINED = "trained"


@dataclass(frozen=True)
class ImageRecord:
    key: str  # the hash of path and ETag: the image's identity whatever its state
    path: str
    etag: str
    seen: datetime
    state: ImageState
    run_id: str


@dataclass
class Control:
    """The submission slot and the failure streak, one row updated under its ETag."""

    active: dict[str, str]  # run id (or claim id) -> ISO time it was taken
    consecutive_failures: int
    last_failure: datetime | None
    etag: str | None

    @property
    def active_runs(self) -> list[str]:
        """Run ids holding a slot (a claim whose submission has not returned yet is not a run)."""
        return [key for key in self.active if not key.startswith(_CLAIM_PREFIX)]


class ChangeKind(enum.StrEnum):
    """What happened to the champion."""

    PROMOTED = "promoted"  # a new best version, by a run's tag step or by hand
    ROLLED_BACK = "rolled back"  # by hand, to a version that was best before
    PINNED = "pinned"
    UNPINNED = "unpinned"


@dataclass(frozen=True)
class ChampionChange:
    """One entry of the champion's history: when, what, from which version to which, who, why, on what evidence.

    `decided_by` is "service" (a run's tag step) or "operator"; `actor` says which operator, through what.
    A rollback names, in `undoes`, the id of the promotion it undoes.
    """

    at: datetime
    kind: ChangeKind
    model: str
    from_version: str | None
    to_version: str | None
    decided_by: str
    actor: str
    reason: str
    evidence: str = ""
    #: The score the record gives `to_version` (holdout or recorded), and the run that registered it.
    score: float | None = None
    run_id: str = ""
    undoes: str = ""
    #: `<UTC time>-<suffix>`, unique; given by `Ledger.record_champion_change` when empty.
    id: str = ""

    def as_dict(self) -> dict:
        """The entry as JSON values (the API's and `retrain models --json`'s)."""
        return {
            **dataclasses.asdict(self),
            "at": self.at.isoformat(),
            "kind": self.kind.value,
            "undoes": self.undoes or None,
        }

    def words(self) -> str:
        """ "promoted 3 -> 5 by service (run-7)": the change in a few words, for lists."""
        moved = f"{self.from_version or '-'} -> {self.to_version or '-'}"
        if self.kind in (ChangeKind.PINNED, ChangeKind.UNPINNED):
            moved = f"version {self.to_version or self.from_version or '-'}"
        run = f" ({self.run_id})" if self.run_id else ""
        return f"{self.kind} {moved} by {self.actor or self.decided_by}{run}"


class UnreadableRunError(ValueError):
    """A run's row this release cannot read (`row` says which and why)."""

    def __init__(self, row: UnreadableRun) -> None:
        super().__init__(f"run {row.run_id}: {row.problem}")
        self.row = row


class SlotTaken(RuntimeError):
    """No submission slot is free (RETRAIN_MAX_ACTIVE_RUNS runs are in flight)."""


class ImagesMoved(RuntimeError):
    """Someone else moved some of the images first (a concurrent submission or run end).

    `moved` holds the images this call had already moved, as they now are, so the caller can put them back.
    """

    def __init__(self, message: str, moved: list[ImageRecord]) -> None:
        super().__init__(message)
        self.moved = moved


class Ledger:
    def __init__(self, service: TableServiceClient, table_prefix: str) -> None:
        self._labels = service.get_table_client(f"{table_prefix}labels")
        self._images = service.get_table_client(f"{table_prefix}images")
        self._runs = service.get_table_client(f"{table_prefix}runs")
        self._control = service.get_table_client(f"{table_prefix}control")
        self._champion = service.get_table_client(f"{table_prefix}champion")

    @classmethod
    def from_connection_string(cls, connection_string: str, table_prefix: str) -> Ledger:
        return cls(TableServiceClient.from_connection_string(connection_string, **TABLE_CLIENT_OPTIONS), table_prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
        """The ledger's tables, by connection string or keyless by identity."""
        connection = settings.storage_connection()
        if connection.connection_string is not None:
            return cls.from_connection_string(connection.connection_string, settings.LEDGER_TABLE_PREFIX)
        service = TableServiceClient(
            endpoint=str(connection.table_service_uri),
            credential=signed_in_credential(connection.client_id),
            **TABLE_CLIENT_OPTIONS,
        )
        return cls(service, settings.LEDGER_TABLE_PREFIX)

    def ensure_tables(self) -> None:
        for table in (self._labels, self._images, self._runs, self._control, self._champion):
            with contextlib.suppress(ResourceExistsError):
                table.create_table()

    def table(self, name: str) -> TableClient:
        """One of the ledger's tables (`labels`, `images`, `runs`, `control`), for the migration of the first
        layout (`retrainer/ledger_migration.py`), which reads and retires that layout's rows. Everything else
        reads and writes through the methods below."""
        tables = {"labels": self._labels, "images": self._images, "runs": self._runs, "control": self._control}
        return tables[name]

    def insert_images_once(self, images: list[ImageRecord]) -> None:
        """Insert both rows of each image the ledger does not hold yet; never touch one it holds (whatever its
        state there: the service may have moved it since). At most 50 images a call.

        One transaction for them all; when it meets an image that is there already (a resumed or concurrent
        migration), image by image, skipping those.
        """
        if not images:
            return
        try:
            self._images.submit_transaction(
                [op for image in images for op in self._insert_operations(image)]  # 2 rows an image, 100 at most
            )
            return
        except TableTransactionError as error:
            if _error_code(error) != "EntityAlreadyExists":
                raise
        for image in images:
            try:
                self._images.submit_transaction(self._insert_operations(image))
            except TableTransactionError as error:
                if _error_code(error) != "EntityAlreadyExists":
                    raise

    def _insert_operations(self, image: ImageRecord) -> list:
        return [
            (TransactionOperation.CREATE, self._identity_entity(image)),
            (TransactionOperation.CREATE, self._state_entity(image)),
        ]

    def import_images(self, images: Iterable[ImageRecord]) -> int:
        """Write image records as they are, both rows of each, 50 images a transaction (upserts): for bulk
        loads into a ledger nothing else writes (benchmarks). Upserts would add a second state row to an
        image the service has moved since, so the migration inserts instead (`insert_images_once`).
        Returns how many were written."""
        written = 0
        records = iter(images)
        while chunk := list(itertools.islice(records, _BATCH // 2)):
            operations: list = []
            for record in chunk:
                operations += [
                    (TransactionOperation.UPSERT, self._identity_entity(record)),
                    (TransactionOperation.UPSERT, self._state_entity(record)),
                ]
            self._images.submit_transaction(operations)
            written += len(chunk)
        return written

    # --- labels waiting for their image --------------------------------------------------------

    def record_waiting_label(self, stem: str, label_path: str) -> None:
        """Remember a label whose image has not arrived; re-recording keeps the first time."""
        entity = {
            "PartitionKey": _WAITING,
            "RowKey": row_key(stem),
            "stem": stem,
            "label_path": label_path,
            "since": now_utc(),
        }
        with contextlib.suppress(ResourceExistsError):
            self._labels.create_entity(entity)

    def waiting_label(self, stem: str) -> WaitingLabel | None:
        try:
            entity = self._labels.get_entity(_WAITING, row_key(stem))
        except ResourceNotFoundError:
            return None
        return WaitingLabel(entity["stem"], entity["label_path"], entity["since"])

    def clear_waiting_label(self, stem: str) -> None:
        self._labels.delete_entity(_WAITING, row_key(stem))

    def waiting_labels(self) -> Iterator[WaitingLabel]:
        for entity in self._labels.query_entities(f"PartitionKey eq '{_WAITING}'"):
            yield WaitingLabel(entity["stem"], entity["label_path"], entity["since"])

    # --- images --------------------------------------------------------------------------------

    def forget_image(self, path: str, etag: str) -> None:
        """Undo `record_image` (its follow-up failed, and the event will be delivered again)."""
        image_hash = _image_key(path, etag)
        for key in (f"id|{image_hash}", _state_row(image_hash, ImageState.PENDING, "")):
            with contextlib.suppress(ResourceNotFoundError):
                self._images.delete_entity(_IMAGES, key)

    def record_image(self, path: str, etag: str, seen: datetime | None = None) -> bool:
        """Record one image version once: True when new, False for a duplicate or redelivered event."""
        record = ImageRecord(_image_key(path, etag), path, etag, seen or now_utc(), ImageState.PENDING, "")
        try:
            self._images.submit_transaction(self._insert_operations(record))
        except TableTransactionError as error:
            if _error_code(error) != "EntityAlreadyExists":
                raise
            return False
        return True

    def pending_images(self) -> list[ImageRecord]:
        """Images recorded and not yet given to a run: one key range, whatever the history."""
        return self._state_range(f"{ImageState.PENDING}|")

    def all_images(self) -> list[ImageRecord]:
        """Every image ever recorded, in any state: the whole partition (diagnostics and tests, not the service)."""
        query = f"PartitionKey eq {_literal(_IMAGES)} and RowKey ge 'p'"  # state rows; identity rows are 'id|'
        return [
            ImageRecord(e["key"], e["path"], e["etag"], e["seen"], ImageState(e["state"]), e["run_id"])
            for e in self._images.query_entities(query)
        ]

    def run_images(self, run_id: str, state: ImageState = ImageState.IN_RUN) -> list[ImageRecord]:
        """The images a run (or a claim) holds, or trained on with `state=ImageState.TRAINED`."""
        prefix = "run" if state == ImageState.IN_RUN else ImageState.TRAINED
        return self._state_range(f"{prefix}|{run_id}|")

    def _state_range(self, prefix: str) -> list[ImageRecord]:
        query = f"PartitionKey eq {_literal(_IMAGES)} and {_prefix_range(prefix)}"
        return [
            ImageRecord(e["key"], e["path"], e["etag"], e["seen"], ImageState(e["state"]), e["run_id"])
            for e in self._images.query_entities(query)
        ]

    def assign_images(self, images: list[ImageRecord], state: ImageState, run_id: str) -> list[ImageRecord]:
        """Move images to a state (and run); returns them as they now are.

        Each move deletes one state row and inserts the next, in same-partition transactions (atomic
        each; 50 moves a transaction). A move of an image that someone else moved first fails its
        transaction instead of overwriting their move: ImagesMoved, carrying what earlier transactions
        of this call moved.
        """
        moves = [(image, ImageRecord(image.key, image.path, image.etag, image.seen, state, run_id)) for image in images]
        done: list[ImageRecord] = []
        for start in range(0, len(moves), _BATCH // 2):
            chunk = moves[start : start + _BATCH // 2]
            operations: list = []
            for old, new in chunk:
                old_row = _state_row(old.key, old.state, old.run_id)
                if old_row == _state_row(new.key, new.state, new.run_id):
                    continue
                operations += [
                    (TransactionOperation.DELETE, {"PartitionKey": _IMAGES, "RowKey": old_row}),
                    (TransactionOperation.CREATE, self._state_entity(new)),
                ]
            if operations:
                try:
                    self._images.submit_transaction(operations)
                except TableTransactionError as error:
                    if _error_code(error) not in ("ResourceNotFound", "EntityAlreadyExists"):
                        raise
                    raise ImagesMoved(
                        f"{len(moves) - len(done)} of {len(moves)} images could not be moved to {state} "
                        f"{run_id}: someone moved some of them first",
                        done,
                    ) from error
            done += [new for _, new in chunk]
        return done

    @staticmethod
    def _identity_entity(image: ImageRecord) -> dict:
        return {"PartitionKey": _IMAGES, "RowKey": f"id|{image.key}", "path": image.path, "etag": image.etag}

    @staticmethod
    def _state_entity(image: ImageRecord) -> dict:
        return {
            "PartitionKey": _IMAGES,
            "RowKey": _state_row(image.key, image.state, image.run_id),
            "key": image.key,
            "path": image.path,
            "etag": image.etag,
            "seen": image.seen,
            "state": image.state,
            "run_id": image.run_id,
        }

    # --- runs ----------------------------------------------------------------------------------

    def save_run(self, run: RunRecord, etag: str | None = None) -> None:
        """Write a run; with `etag`, only if nobody changed it since it was read (ResourceModifiedError).

        Texts are bounded and the history keeps its first and latest entries, so a record always fits.
        """
        entity, by_time = self._run_entities(run)
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
            self._runs.submit_transaction([first, (TransactionOperation.UPSERT, by_time, {"mode": UpdateMode.REPLACE})])
        except TableTransactionError as error:
            if _error_code(error) in ("UpdateConditionNotSatisfied", "ConditionNotMet"):
                raise ResourceModifiedError(f"run {run.run_id} changed since it was read") from error
            raise

    def insert_run_once(self, run: RunRecord) -> bool:
        """Write a run only if the ledger has no record of it: False (and nothing written) when it has one."""
        entity, by_time = self._run_entities(run)
        try:
            self._runs.submit_transaction(
                [
                    (TransactionOperation.CREATE, entity),
                    (TransactionOperation.UPSERT, by_time, {"mode": UpdateMode.REPLACE}),
                ]
            )
        except TableTransactionError as error:
            if _error_code(error) != "EntityAlreadyExists":
                raise
            return False
        return True

    @staticmethod
    def _run_entities(run: RunRecord) -> tuple[dict, dict]:
        """A run's `id|` row and its `time|` copy; ValueError for an id that cannot be a key."""
        if not is_run_id(run.run_id):
            raise ValueError(f"not a run id: {bounded(run.run_id, 80)!r}")
        entity = {
            "PartitionKey": _RUNS,
            "RowKey": f"id|{run.run_id}",
            "run_id": run.run_id,
            "trigger": bounded(run.trigger, 40),
            "reason": bounded(run.reason, MAX_REASON_CHARS),
            "image_count": run.image_count,
            "state": run.state.value,
            "submitted_at": run.submitted_at,
            "history": _bounded_history(run.history),
            "error": bounded(run.error, MAX_ERROR_CHARS),
            **_decision_properties(run.decision),
            "ended_at": run.ended_at.isoformat() if run.ended_at else "",
            "deadline": run.deadline.isoformat() if run.deadline else "",
            "promotion_done": run.promotion_done,
        }
        return entity, {**entity, "RowKey": _run_time_key(run)}

    def run(self, run_id: str) -> RunRecord | None:
        """The run's record; None when there is none, UnreadableRunError when this release cannot read it."""
        found = self.run_with_etag(run_id)
        return found[0] if found else None

    def run_with_etag(self, run_id: str) -> tuple[RunRecord, str] | None:
        """The run's record and its row's ETag; None when there is none, UnreadableRunError when this release
        cannot read it."""
        if not is_run_id(run_id):
            return None
        try:
            entity = self._runs.get_entity(_RUNS, f"id|{run_id}")
        except ResourceNotFoundError:
            return None
        return run_from_row(entity), str(entity.metadata["etag"])

    def runs(self, limit: int = 50) -> list[RunRecord]:
        """The runs this release can read among the newest `limit`, newest first: what the service acts on."""
        return [run for run in self.run_rows(limit) if isinstance(run, RunRecord)]

    def run_rows(self, limit: int = 50) -> list[RunRecord | UnreadableRun]:
        """The newest `limit` runs, newest first, a row this release cannot read as such (what people are
        shown): the first rows of one key range, read a page at a time."""
        query = f"PartitionKey eq {_literal(_RUNS)} and {_prefix_range('time|')}"
        pages = self._runs.query_entities(query, results_per_page=min(max(limit, 1), 1000))
        rows: list[RunRecord | UnreadableRun] = []
        for entity in itertools.islice(pages, limit):
            try:
                rows.append(run_from_row(entity))
            except UnreadableRunError as unreadable:
                rows.append(unreadable.row)
        return rows

    # --- the champion's history ------------------------------------------------------------------

    def record_champion_change(self, change: ChampionChange) -> ChampionChange:
        """Append an entry to the champion's history; returns it with its id.

        An entry with an id is written under it (an upsert): recording the same change twice, as a retried
        promotion does, leaves one entry.
        """
        if not change.id:
            change = dataclasses.replace(
                change, id=f"{change.at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
            )
        inverted = _TIME_CEILING_MS - int(change.at.timestamp() * 1000)
        entity = {
            "PartitionKey": _CHAMPION,
            "RowKey": f"{inverted:013d}|{change.id}",
            "id": change.id,
            "at": change.at,
            "kind": change.kind.value,
            "model": bounded(change.model, 200),
            "from_version": bounded(change.from_version or "", 200),
            "to_version": bounded(change.to_version or "", 200),
            "decided_by": bounded(change.decided_by, 40),
            "actor": bounded(change.actor, 200),
            "reason": bounded(change.reason, MAX_REASON_CHARS),
            "evidence": bounded(change.evidence, MAX_EVIDENCE_CHARS),
            "score": json.dumps(change.score if change.score is None or math.isfinite(change.score) else None),
            "run_id": bounded(change.run_id, 200),
            "undoes": bounded(change.undoes, 200),
        }
        self._champion.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return change

    def champion_history(self, limit: int = 10) -> list[ChampionChange]:
        """The latest `limit` entries of the champion's history, newest first: the first rows of one key range."""
        query = f"PartitionKey eq {_literal(_CHAMPION)}"
        pages = self._champion.query_entities(query, results_per_page=min(max(limit, 1), 1000))
        return [_champion_change(entity) for entity in itertools.islice(pages, limit)]

    # --- the submission slot ---------------------------------------------------------------------

    def control(self) -> Control:
        try:
            entity = self._control.get_entity(_CONTROL, _SLOT)
        except ResourceNotFoundError:
            return Control({}, 0, None, None)
        last = entity.get("last_failure") or ""
        return Control(
            json.loads(entity.get("active", "{}")),
            int(entity.get("consecutive_failures", 0)),
            datetime.fromisoformat(last) if last else None,
            entity.metadata["etag"],
        )

    def _write_control(self, control: Control) -> None:
        """Conditional write: ResourceModifiedError / ResourceExistsError when someone wrote first."""
        entity = {
            "PartitionKey": _CONTROL,
            "RowKey": _SLOT,
            "active": json.dumps(control.active),
            "consecutive_failures": control.consecutive_failures,
            "last_failure": control.last_failure.isoformat() if control.last_failure else "",
        }
        if control.etag is None:
            self._control.create_entity(entity)
        else:
            self._control.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=control.etag, match_condition=MatchConditions.IfNotModified
            )

    def update_control(self, change: Callable[[Control], None]) -> Control:
        """Apply `change(control)` (which may raise to abort) until it lands without a conflict.

        Bounded: after many conflicts in a row (a storm of writers) it gives up with an error.
        """
        for attempt in range(_CONTROL_ATTEMPTS):
            control = self.control()
            change(control)
            try:
                self._write_control(control)
                return control
            except (ResourceModifiedError, ResourceExistsError):
                time.sleep(min(0.5, 0.005 * (attempt + 1)))
        raise RuntimeError(f"the submission slot changed under {_CONTROL_ATTEMPTS} attempts in a row; try again")

    def claim_slot(self, max_active: int, now: datetime | None = None) -> str:
        """Take a submission slot; SlotTaken when `max_active` runs hold one. Returns the claim id."""
        claim = f"{_CLAIM_PREFIX}{uuid.uuid4().hex}"
        moment = now or now_utc()

        def take(control: Control) -> None:
            if len(control.active) >= max_active:
                raise SlotTaken(f"{len(control.active)} run(s) in flight: {', '.join(sorted(control.active))}")
            control.active[claim] = moment.isoformat()

        self.update_control(take)
        return claim

    def bind_slot(self, claim: str, run_id: str) -> None:
        def bind(control: Control) -> None:
            taken = control.active.pop(claim, now_utc().isoformat())
            control.active[run_id] = taken

        self.update_control(bind)

    def release_slot(self, key: str, *, failed: bool | None = None, when: datetime | None = None) -> None:
        """Free a slot; `failed` True counts a failure, False resets the streak, None leaves it."""

        def release(control: Control) -> None:
            control.active.pop(key, None)
            if failed is True:
                control.consecutive_failures += 1
                control.last_failure = when or now_utc()
            elif failed is False:
                control.consecutive_failures = 0
                control.last_failure = None

        self.update_control(release)


def _error_code(error: TableTransactionError) -> str:
    """The service's error code of a failed transaction (the SDK sets it on the exception)."""
    return str(getattr(error, "error_code", "") or "")


def _history(stored: str) -> list[RunEvent]:
    """A run's history as stored (JSON), each entry's state typed again."""
    return [cast(RunEvent, {**entry, "state": RunState(entry["state"])}) for entry in json.loads(stored)]


def _champion_change(entity: dict) -> ChampionChange:
    score = json.loads(entity.get("score") or "null")
    return ChampionChange(
        at=entity["at"],
        kind=ChangeKind(entity["kind"]),
        model=entity["model"],
        from_version=entity.get("from_version") or None,
        to_version=entity.get("to_version") or None,
        decided_by=entity["decided_by"],
        actor=entity.get("actor", ""),
        reason=entity.get("reason", ""),
        evidence=entity.get("evidence", ""),
        score=float(score) if score is not None else None,
        run_id=entity.get("run_id", ""),
        undoes=entity.get("undoes", ""),
        id=entity["id"],
    )


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
    decision = _stored_decision(entity)
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
