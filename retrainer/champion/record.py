"""The best-model record: the champion's name, version, score and story, as one JSON blob (`BEST_MODEL_BLOB`).

It follows the registry (`shared.champion.tags`): `ChampionAuthority` writes it, in the same critical section
as the tags, and nothing else does. The HTTP API, the status page and the demo read it; ModelPromoted carries it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from retrainer.datastore import BlobStore, InvalidDocumentError, read_document, write_document


class BestModel(BaseModel):
    """The champion as the service records it and announces it (ModelPromoted)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    version: str
    #: Its mAP@0.5 when it was chosen (holdout, else recorded validation); None when no finite figure is known.
    score: float | None
    run: str
    time: str
    #: Who made it the champion: "service" (a run's tag step) or "operator" (`retrain promote`, the API).
    decided_by: Literal["service", "operator"] = "service"
    reason: str = ""
    #: The version it replaced as the champion (None for the first).
    replaced_version: str | None = None
    #: The registry's id of the change that made it the champion (`champion_change` tag).
    change: str = ""
    #: The operator's pin on this version, mirrored from its registry tags for readers that never call the
    #: registry: while set, runs compare and the champion stays.
    pinned_reason: str | None = None
    pinned_by: str | None = None
    pinned_at: str | None = None

    @field_validator("score")
    @classmethod
    def _finite(cls, score: float | None) -> float | None:
        """A record holds a figure people can read, or none: NaN and infinities are not scores."""
        return score if score is None or math.isfinite(score) else None


class UnreadableRecordError(RuntimeError):
    """A record exists but cannot be read; the message says which and what repairs it."""


def read_best_model(datastore: BlobStore, blob: str) -> BestModel | None:
    """The champion's record; None when none was promoted; UnreadableRecordError when one was but its record
    cannot be read (the next change of the champion rewrites it)."""
    try:
        return read_document(datastore, blob, BestModel)
    except InvalidDocumentError:
        raise UnreadableRecordError(
            f"{blob} is not a valid best-model record: a model was promoted, and the next change rewrites the record"
        ) from None


def current_best_model(datastore: BlobStore, blob: str) -> BestModel | None:
    """The champion's record, or None when none was promoted or it is unreadable (logged)."""
    try:
        return read_best_model(datastore, blob)
    except UnreadableRecordError:
        return None


def write_best_model(datastore: BlobStore, blob: str, record: BestModel) -> None:
    write_document(datastore, blob, record)
