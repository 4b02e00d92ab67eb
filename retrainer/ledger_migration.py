"""The ledger's first layout, and its move into the keyed one: once, outside the hot path.

The first layout kept every image in one partition (`images`) and every run in another (`runs`, keyed by
the run id alone), with the state as a property: each pending check scanned every image ever recorded.
An earlier release replaced it (`retrainer/ledger/`), so a deployed ledger may still hold its rows.

`ensure_current_layout` is called once per process by the composition root: one point read of the
layout marker, a row of the control table. Only a ledger without the marker is scanned for rows of the
first layout, which are migrated; the marker is written once none is left. `retrain migrate-ledger`
runs the same pass whatever the marker says (for rows an instance of a first-layout release wrote
after the marker, during a deploy).

The pass is safe to interrupt, to repeat and to run from two instances at once. A legacy row is
deleted only after its new rows exist (the two layouts live in different partitions, which no
transaction spans), so an interrupted pass leaves copies in both; the new rows are therefore
inserted, never upserted: an image or run the new layout already holds is left as it is there,
because the service may have moved or followed it since, and only its legacy row goes. A legacy row
that cannot be read is logged and left in place; the others migrate, and the marker waits for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.core.exceptions import ResourceNotFoundError

from retrainer.events import is_run_id
from retrainer.ledger import Ledger
from retrainer.ledger.images import ImageRecord, ImageState
from retrainer.ledger.rows import bounded
from retrainer.ledger.runs import run_from_row
from shared.records import RunRecord

log = logging.getLogger(__name__)

#: The first layout's partitions, in the tables the current layout uses too.
LEGACY_IMAGES = "images"
LEGACY_RUNS = "runs"
#: The layout marker: a row of the control table, written once the first layout's rows are all moved.
CURRENT_LAYOUT = 2
_MARKER_PARTITION, _MARKER_ROW = "control", "layout"
_IMAGES_A_TRANSACTION = 50  # two rows an image, Table Storage's limit of 100 operations


@dataclass(frozen=True)
class Migration:
    """What one pass did: legacy rows moved and deleted, and legacy rows left because they cannot be read."""

    retired: int
    left: int


def ensure_current_layout(ledger: Ledger) -> Migration | None:
    """Migrate a ledger that is not marked as in the current layout; None (and nothing read but the marker)
    for a marked one."""
    return None if layout_marked(ledger) else migrate_and_mark(ledger)


def migrate_and_mark(ledger: Ledger) -> Migration:
    """One pass over the first layout's rows, whatever the marker says; the marker is written once none is left."""
    migration = migrate_first_layout(ledger)
    if migration.retired:
        log.warning("ledger: %d rows of the first layout moved into the current one", migration.retired)
    if migration.left == 0:
        mark_layout(ledger)
    return migration


def layout_marked(ledger: Ledger) -> bool:
    try:
        marker = ledger.slot.table.get_entity(_MARKER_PARTITION, _MARKER_ROW)
    except ResourceNotFoundError:
        return False
    layout = marker.get("layout")
    return isinstance(layout, int) and layout >= CURRENT_LAYOUT  # a damaged marker: the pass is safe to repeat


def mark_layout(ledger: Ledger) -> None:
    ledger.slot.table.upsert_entity(
        {
            "PartitionKey": _MARKER_PARTITION,
            "RowKey": _MARKER_ROW,
            "layout": CURRENT_LAYOUT,
            "marked_at": datetime.now(UTC).isoformat(),
        }
    )


def migrate_first_layout(ledger: Ledger) -> Migration:
    """Move every readable row of the first layout into the current one (0 retired once done)."""
    images = _migrate_images(ledger)
    runs = _migrate_runs(ledger)
    return Migration(images.retired + runs.retired, images.left + runs.left)


def _migrate_images(ledger: Ledger) -> Migration:
    table = ledger.images.table
    legacy = list(table.query_entities(f"PartitionKey eq '{LEGACY_IMAGES}'"))
    read = [(entity, legacy_image(entity)) for entity in legacy]
    movable = [(entity, image) for entity, image in read if image is not None]
    for start in range(0, len(movable), _IMAGES_A_TRANSACTION):
        chunk = movable[start : start + _IMAGES_A_TRANSACTION]
        ledger.images.insert_once([image for _, image in chunk])
        for entity, _ in chunk:
            table.delete_entity(LEGACY_IMAGES, entity["RowKey"])
    return Migration(len(movable), len(legacy) - len(movable))


def _migrate_runs(ledger: Ledger) -> Migration:
    table = ledger.runs.table
    retired = left = 0
    for entity in table.query_entities(f"PartitionKey eq '{LEGACY_RUNS}'"):
        run = legacy_run(entity)
        if run is None:
            left += 1
            continue
        ledger.runs.insert_once(run)
        table.delete_entity(LEGACY_RUNS, entity["RowKey"])
        retired += 1
    return Migration(retired, left)


def legacy_image(entity: dict) -> ImageRecord | None:
    """An image row of the first layout; None (logged) when it cannot be read."""
    try:
        return ImageRecord(
            entity["RowKey"],
            entity["path"],
            entity["etag"],
            entity["seen"],
            ImageState(entity["state"]),
            entity["run_id"],
        )
    except (KeyError, ValueError) as error:
        log.error("legacy image row %r cannot be migrated and stays: %s", entity.get("RowKey"), error)
        return None


def legacy_run(entity: dict) -> RunRecord | None:
    """A run row of the first layout (keyed by the run id alone); None (logged) when it cannot be read."""
    try:
        run = run_from_row({**entity, "run_id": entity.get("run_id") or entity["RowKey"]})
        if not is_run_id(run.run_id):
            raise ValueError(f"not a run id: {bounded(run.run_id, 80)!r}")
    except (KeyError, ValueError, TypeError) as error:
        log.error("legacy run row %r cannot be migrated and stays: %s", entity.get("RowKey"), error)
        return None
    return run
