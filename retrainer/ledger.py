"""Service state in Azure Table Storage (Azurite locally).

Tables are named `<LEDGER_TABLE_PREFIX><name>`. Row keys are URL-quoted paths, because Table
Storage forbids '/', '\\', '#' and '?' in keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient

_WAITING = "waiting"


def row_key(path: str) -> str:
    return quote(path, safe="")


@dataclass(frozen=True)
class WaitingLabel:
    stem: str
    label_path: str
    since: datetime


class Ledger:
    def __init__(self, service: TableServiceClient, table_prefix: str) -> None:
        self._labels = service.get_table_client(f"{table_prefix}labels")

    @classmethod
    def from_connection_string(cls, connection_string: str, table_prefix: str) -> Ledger:
        return cls(TableServiceClient.from_connection_string(connection_string), table_prefix)

    def ensure_tables(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._labels.create_table()

    def record_waiting_label(self, stem: str, label_path: str) -> None:
        """Remember a label whose image has not arrived; re-recording keeps the first time."""
        entity = {
            "PartitionKey": _WAITING,
            "RowKey": row_key(stem),
            "label_path": label_path,
            "since": datetime.now(UTC),
        }
        with contextlib.suppress(ResourceExistsError):
            self._labels.create_entity(entity)

    def waiting_label(self, stem: str) -> WaitingLabel | None:
        try:
            entity = self._labels.get_entity(_WAITING, row_key(stem))
        except ResourceNotFoundError:
            return None
        return WaitingLabel(unquote(entity["RowKey"]), entity["label_path"], entity["since"])

    def clear_waiting_label(self, stem: str) -> None:
        self._labels.delete_entity(_WAITING, row_key(stem))

    def waiting_labels(self) -> Iterator[WaitingLabel]:
        for entity in self._labels.query_entities(f"PartitionKey eq '{_WAITING}'"):
            yield WaitingLabel(unquote(entity["RowKey"]), entity["label_path"], entity["since"])
