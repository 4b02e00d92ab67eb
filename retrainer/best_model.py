"""The best-model record: the promoted model's name, version, score and run, as one JSON blob.

The service writes it (`BEST_MODEL_BLOB`) when a completed run changed the best version; the service,
the HTTP API and the status view read it here, each as strictly as it needs.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from retrainer.datastore import BlobMissingError, Datastore
from retrainer.promotion import BestModel

log = logging.getLogger(__name__)


class UnreadableRecordError(RuntimeError):
    """A record exists but cannot be read; the message says which and what repairs it."""


def read_best_model(datastore: Datastore, blob: str) -> BestModel | None:
    """The promoted model; None when none was promoted; UnreadableRecordError when one was but its record
    cannot be read (the next promotion rewrites it)."""
    try:
        return BestModel.model_validate_json(datastore.read(blob))
    except BlobMissingError:
        return None
    except ValidationError as error:
        log.error("%s is not a valid best-model record: %s", blob, str(error)[:300])
        raise UnreadableRecordError(
            f"{blob} is not a valid best-model record: a model was promoted, and the next promotion rewrites the record"
        ) from None


def current_best_model(datastore: Datastore, blob: str) -> BestModel | None:
    """The promoted model, or None when none was promoted or its record is unreadable (logged; the next
    promotion rewrites it)."""
    try:
        return read_best_model(datastore, blob)
    except UnreadableRecordError:
        return None


def write_best_model(datastore: Datastore, blob: str, record: BestModel) -> None:
    datastore.write_json(blob, record.model_dump())
