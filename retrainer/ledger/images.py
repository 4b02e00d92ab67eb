"""The images table: each image version recorded once, and where it is (pending, held by a run, trained on).

One partition: an identity row `id|<hash>` (inserted once, so a duplicate event is refused) and a state row
whose key starts with the state, `pending|<hash>`, `run|<run id>|<hash>` or `trained|<run id>|<hash>`, so each
frequent read is one key range whatever the history. A move deletes one state row and inserts the next in
one same-partition transaction, which fails instead of overwriting someone else's move.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableTransactionError, TransactionOperation

from retrainer.ledger.rows import BATCH, Table, error_code, literal, now_utc, prefix_range, row_key

PARTITION = "images.v2"


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


class ImagesMoved(RuntimeError):
    """Someone else moved some of the images first (a concurrent submission or run end).

    `moved` holds the images this call had already moved, as they now are, so the caller can put them back.
    """

    def __init__(self, message: str, moved: list[ImageRecord]) -> None:
        super().__init__(message)
        self.moved = moved


class ImageLedger:
    """The images table's client."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def record(self, path: str, etag: str, seen: datetime | None = None) -> bool:
        """Record one image version once: True when new, False for a duplicate or redelivered event."""
        image = ImageRecord(_image_key(path, etag), path, etag, seen or now_utc(), ImageState.PENDING, "")
        try:
            self.table.submit_transaction(_insert_operations(image))
        except TableTransactionError as error:
            if error_code(error) != "EntityAlreadyExists":
                raise
            return False
        return True

    def forget(self, path: str, etag: str) -> None:
        """Undo `record` (its follow-up failed, and the event will be delivered again)."""
        image_hash = _image_key(path, etag)
        for key in (f"id|{image_hash}", _state_row(image_hash, ImageState.PENDING, "")):
            with contextlib.suppress(ResourceNotFoundError):
                self.table.delete_entity(PARTITION, key)

    def pending(self) -> list[ImageRecord]:
        """Images recorded and not yet given to a run: one key range, whatever the history."""
        return self._state_range(f"{ImageState.PENDING}|")

    def of_run(self, run_id: str, state: ImageState = ImageState.IN_RUN) -> list[ImageRecord]:
        """The images a run (or a claim) holds, or trained on with `state=ImageState.TRAINED`."""
        prefix = "run" if state == ImageState.IN_RUN else ImageState.TRAINED
        return self._state_range(f"{prefix}|{run_id}|")

    def all(self) -> list[ImageRecord]:
        """Every image ever recorded, in any state: the whole partition (diagnostics and tests, not the service)."""
        query = f"PartitionKey eq {literal(PARTITION)} and RowKey ge 'p'"  # state rows; identity rows are 'id|'
        return [_image(entity) for entity in self.table.query_entities(query)]

    def _state_range(self, prefix: str) -> list[ImageRecord]:
        query = f"PartitionKey eq {literal(PARTITION)} and {prefix_range(prefix)}"
        return [_image(entity) for entity in self.table.query_entities(query)]

    def assign(self, images: list[ImageRecord], state: ImageState, run_id: str) -> list[ImageRecord]:
        """Move images to a state (and run); returns them as they now are.

        Each move deletes one state row and inserts the next, in same-partition transactions (atomic
        each; 50 moves a transaction). A move of an image that someone else moved first fails its
        transaction instead of overwriting their move: ImagesMoved, carrying what earlier transactions
        of this call moved.
        """
        moves = [(image, ImageRecord(image.key, image.path, image.etag, image.seen, state, run_id)) for image in images]
        done: list[ImageRecord] = []
        for start in range(0, len(moves), BATCH // 2):
            chunk = moves[start : start + BATCH // 2]
            operations: list = []
            for old, new in chunk:
                old_row = _state_row(old.key, old.state, old.run_id)
                if old_row == _state_row(new.key, new.state, new.run_id):
                    continue
                operations += [
                    (TransactionOperation.DELETE, {"PartitionKey": PARTITION, "RowKey": old_row}),
                    (TransactionOperation.CREATE, _state_entity(new)),
                ]
            if operations:
                try:
                    self.table.submit_transaction(operations)
                except TableTransactionError as error:
                    if error_code(error) not in ("ResourceNotFound", "EntityAlreadyExists"):
                        raise
                    raise ImagesMoved(
                        f"{len(moves) - len(done)} of {len(moves)} images could not be moved to {state} "
                        f"{run_id}: someone moved some of them first",
                        done,
                    ) from error
            done += [new for _, new in chunk]
        return done

    def insert_once(self, images: list[ImageRecord]) -> None:
        """Insert both rows of each image the ledger does not hold yet; never touch one it holds (whatever its
        state there: the service may have moved it since). At most 50 images a call.

        One transaction for them all; when it meets an image that is there already (a resumed or concurrent
        migration), image by image, skipping those.
        """
        if not images:
            return
        try:
            # 2 rows an image, 100 at most
            self.table.submit_transaction([op for image in images for op in _insert_operations(image)])
            return
        except TableTransactionError as error:
            if error_code(error) != "EntityAlreadyExists":
                raise
        for image in images:
            try:
                self.table.submit_transaction(_insert_operations(image))
            except TableTransactionError as error:
                if error_code(error) != "EntityAlreadyExists":
                    raise

    def bulk_import(self, images: Iterable[ImageRecord]) -> int:
        """Write image records as they are, both rows of each, 50 images a transaction (upserts): for bulk
        loads into a ledger nothing else writes (benchmarks). Upserts would add a second state row to an
        image the service has moved since, so the migration inserts instead (`insert_once`).
        Returns how many were written."""
        written = 0
        records = iter(images)
        while chunk := list(itertools.islice(records, BATCH // 2)):
            operations: list = []
            for image in chunk:
                operations += [
                    (TransactionOperation.UPSERT, _identity_entity(image)),
                    (TransactionOperation.UPSERT, _state_entity(image)),
                ]
            self.table.submit_transaction(operations)
            written += len(chunk)
        return written


def _image_key(path: str, etag: str) -> str:
    return row_key(f"{path}@{etag.strip(chr(34))}")


def _state_row(image_hash: str, state: ImageState, run_id: str) -> str:
    if state == ImageState.PENDING:
        return f"{ImageState.PENDING}|{image_hash}"
    return f"{'run' if state == ImageState.IN_RUN else ImageState.TRAINED}|{run_id}|{image_hash}"


def _insert_operations(image: ImageRecord) -> list:
    return [
        (TransactionOperation.CREATE, _identity_entity(image)),
        (TransactionOperation.CREATE, _state_entity(image)),
    ]


def _identity_entity(image: ImageRecord) -> dict:
    return {"PartitionKey": PARTITION, "RowKey": f"id|{image.key}", "path": image.path, "etag": image.etag}


def _state_entity(image: ImageRecord) -> dict:
    return {
        "PartitionKey": PARTITION,
        "RowKey": _state_row(image.key, image.state, image.run_id),
        "key": image.key,
        "path": image.path,
        "etag": image.etag,
        "seen": image.seen,
        "state": image.state,
        "run_id": image.run_id,
    }


def _image(entity: dict) -> ImageRecord:
    return ImageRecord(
        entity["key"], entity["path"], entity["etag"], entity["seen"], ImageState(entity["state"]), entity["run_id"]
    )
