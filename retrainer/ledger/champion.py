"""The champion table: the champion's history (each promotion, automatic or by hand, each rollback and pin).

One partition keyed by inverted time, so the latest entries are the first rows of one range.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.data.tables import UpdateMode

from retrainer.ledger.rows import MAX_EVIDENCE_CHARS, MAX_REASON_CHARS, Table, bounded, literal, newest_first

PARTITION = "champion"


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
    #: `<UTC time>-<suffix>`, unique; given by `ChampionHistory.record` when empty.
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


class ChampionHistory:
    """The champion table's client."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def record(self, change: ChampionChange) -> ChampionChange:
        """Append an entry to the champion's history; returns it with its id.

        An entry with an id is written under it (an upsert): recording the same change twice, as a retried
        promotion does, leaves one entry.
        """
        if not change.id:
            change = dataclasses.replace(
                change, id=f"{change.at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
            )
        entity = {
            "PartitionKey": PARTITION,
            "RowKey": f"{newest_first(change.at)}|{change.id}",
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
        self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return change

    def latest(self, limit: int = 10) -> list[ChampionChange]:
        """The latest `limit` entries of the champion's history, newest first: the first rows of one key range."""
        pages = self.table.query_entities(
            f"PartitionKey eq {literal(PARTITION)}", results_per_page=min(max(limit, 1), 1000)
        )
        return [_champion_change(entity) for entity in itertools.islice(pages, limit)]


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
