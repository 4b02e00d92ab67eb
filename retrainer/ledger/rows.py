"""What every table of the ledger shares: keys, bounds on text, key ranges, the service's error codes.

Table Storage forbids '/', '\\', '#' and '?' in keys and limits them to 1 KiB (a legal blob name is longer),
so a path is keyed by its hash. Its string properties hold at most 64 KiB of UTF-16 (32K characters) and an
entity at most 1 MiB: every text that reaches a row is bounded, so no input can make a record unwritable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.data.tables import TableEntity, TableTransactionError, TransactionOperation, UpdateMode

MAX_REASON_CHARS = 500
MAX_ERROR_CHARS = 4000
MAX_EVIDENCE_CHARS = 2000
#: What the ledger puts in one property: JSON it writes is ASCII (`json.dumps` escapes the rest), one UTF-16 unit
#: a character, so this is under 64 KiB with a margin (the limit is 32,768).
PROPERTY_CHARS = 32_000
#: The largest time in milliseconds that keys rows newest first (year 2286).
TIME_CEILING_MS = 10**13
BATCH = 100  # Table Storage's transaction limit

#: An operation of an entity group transaction: what to do, the entity, and the operation's options.
Operation = (
    tuple[TransactionOperation, Mapping[str, Any]] | tuple[TransactionOperation, Mapping[str, Any], Mapping[str, Any]]
)


class Table(Protocol):
    """The part of `azure.data.tables.TableClient` the ledger uses (the fast tier's in-memory table has it too)."""

    def create_table(self) -> object: ...

    def create_entity(self, entity: Mapping[str, Any]) -> object: ...

    def get_entity(self, partition_key: str, row_key: str) -> TableEntity: ...

    def update_entity(
        self,
        entity: Mapping[str, Any],
        mode: UpdateMode = ...,
        *,
        etag: str | None = ...,
        match_condition: MatchConditions | None = ...,
    ) -> object: ...

    def upsert_entity(self, entity: Mapping[str, Any], mode: UpdateMode = ...) -> object: ...

    def delete_entity(self, partition_key: str, row_key: str) -> None: ...

    def query_entities(self, query_filter: str, *, results_per_page: int | None = ...) -> Iterable[TableEntity]: ...

    def submit_transaction(self, operations: Iterable[Operation]) -> object: ...


class TableService(Protocol):
    """The part of `azure.data.tables.TableServiceClient` the ledger uses: one client per table."""

    def get_table_client(self, table_name: str) -> Table: ...


def row_key(text: str) -> str:
    """A bounded, key-safe row key for any path."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ascii_json(value: object) -> str:
    """JSON of ASCII characters only, so its length is its size in a table property (one UTF-16 unit each)."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


def newest_first(moment: datetime) -> str:
    """A key part that sorts later times first (13 digits of inverted milliseconds)."""
    return f"{TIME_CEILING_MS - int(moment.timestamp() * 1000):013d}"


def literal(value: str) -> str:
    """An OData string literal."""
    return "'" + value.replace("'", "''") + "'"


def prefix_range(prefix: str) -> str:
    """A RowKey range filter for every key that starts with `prefix` ('|' + 1 is '}')."""
    return f"RowKey ge {literal(prefix)} and RowKey lt {literal(prefix[:-1] + chr(ord(prefix[-1]) + 1))}"


def error_code(error: TableTransactionError) -> str:
    """The service's error code of a failed transaction (the SDK sets it on the exception)."""
    return str(getattr(error, "error_code", "") or "")


def now_utc() -> datetime:
    return datetime.now(UTC)
