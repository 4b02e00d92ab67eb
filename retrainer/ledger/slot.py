"""The control table: the submission slot and the failure streak, one row written under its ETag.

Every writer reads the row, changes it, and writes it only if nobody wrote first, so handlers on many
instances agree on who holds a slot.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from retrainer.ledger.rows import Table, now_utc

PARTITION, ROW = "control", "submission"
CLAIM_PREFIX = "claim-"
#: A claim whose submitter vanished is settled after this (the service adopts its run or frees its images).
STALE_CLAIM = timedelta(minutes=15)
_ATTEMPTS = 50


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
        return [key for key in self.active if not key.startswith(CLAIM_PREFIX)]


class SlotTaken(RuntimeError):
    """No submission slot is free (RETRAIN_MAX_ACTIVE_RUNS runs are in flight)."""


class SubmissionSlot:
    """The control table's client: the slot's row (the table also holds the ledger's layout marker)."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def read(self) -> Control:
        try:
            entity = self.table.get_entity(PARTITION, ROW)
        except ResourceNotFoundError:
            return Control({}, 0, None, None)
        last = entity.get("last_failure") or ""
        return Control(
            json.loads(entity.get("active", "{}")),
            int(entity.get("consecutive_failures", 0)),
            datetime.fromisoformat(last) if last else None,
            entity.metadata["etag"],
        )

    def _write(self, control: Control) -> None:
        """Conditional write: ResourceModifiedError / ResourceExistsError when someone wrote first."""
        entity = {
            "PartitionKey": PARTITION,
            "RowKey": ROW,
            "active": json.dumps(control.active),
            "consecutive_failures": control.consecutive_failures,
            "last_failure": control.last_failure.isoformat() if control.last_failure else "",
        }
        if control.etag is None:
            self.table.create_entity(entity)
        else:
            self.table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=control.etag, match_condition=MatchConditions.IfNotModified
            )

    def update(self, change: Callable[[Control], None]) -> Control:
        """Apply `change(control)` (which may raise to abort) until it lands without a conflict.

        Bounded: after many conflicts in a row (a storm of writers) it gives up with an error.
        """
        for attempt in range(_ATTEMPTS):
            control = self.read()
            change(control)
            try:
                self._write(control)
                return control
            except (ResourceModifiedError, ResourceExistsError):
                time.sleep(min(0.5, 0.005 * (attempt + 1)))
        raise RuntimeError(f"the submission slot changed under {_ATTEMPTS} attempts in a row; try again")

    def claim(self, max_active: int, now: datetime | None = None) -> str:
        """Take a submission slot; SlotTaken when `max_active` runs hold one. Returns the claim id."""
        claim = f"{CLAIM_PREFIX}{uuid.uuid4().hex}"
        moment = now or now_utc()

        def take(control: Control) -> None:
            if len(control.active) >= max_active:
                raise SlotTaken(f"{len(control.active)} run(s) in flight: {', '.join(sorted(control.active))}")
            control.active[claim] = moment.isoformat()

        self.update(take)
        return claim

    def bind(self, claim: str, run_id: str) -> None:
        def bind(control: Control) -> None:
            taken = control.active.pop(claim, now_utc().isoformat())
            control.active[run_id] = taken

        self.update(bind)

    def release(self, key: str, *, failed: bool | None = None, when: datetime | None = None) -> None:
        """Free a slot; `failed` True counts a failure, False resets the streak, None leaves it."""

        def release(control: Control) -> None:
            control.active.pop(key, None)
            if failed is True:
                control.consecutive_failures += 1
                control.last_failure = when or now_utc()
            elif failed is False:
                control.consecutive_failures = 0
                control.last_failure = None

        self.update(release)
