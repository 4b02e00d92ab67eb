"""The labels table: labels whose image has not arrived yet, keyed by a hash of the image's stem."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from retrainer.ledger.rows import Table, literal, now_utc, row_key

PARTITION = "waiting"


@dataclass(frozen=True)
class WaitingLabel:
    stem: str
    label_path: str
    since: datetime


class WaitingLabels:
    """The labels table's client."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def record(self, stem: str, label_path: str) -> None:
        """Remember a label whose image has not arrived; re-recording keeps the first time."""
        entity = {"PartitionKey": PARTITION, "RowKey": row_key(stem), "stem": stem, "label_path": label_path}
        with contextlib.suppress(ResourceExistsError):
            self.table.create_entity({**entity, "since": now_utc()})

    def get(self, stem: str) -> WaitingLabel | None:
        try:
            entity = self.table.get_entity(PARTITION, row_key(stem))
        except ResourceNotFoundError:
            return None
        return WaitingLabel(entity["stem"], entity["label_path"], entity["since"])

    def clear(self, stem: str) -> None:
        self.table.delete_entity(PARTITION, row_key(stem))

    def all(self) -> Iterator[WaitingLabel]:
        for entity in self.table.query_entities(f"PartitionKey eq {literal(PARTITION)}"):
            yield WaitingLabel(entity["stem"], entity["label_path"], entity["since"])
