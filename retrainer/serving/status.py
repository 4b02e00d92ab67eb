"""The serving status as a blob (SERVING_STATUS_BLOB): written by the rollout, read by every page and command."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from retrainer.datastore import BlobMissingError, BlobStore
from retrainer.serving.rollout import ServingStatus, StatusStore

log = logging.getLogger(__name__)


def read_serving_status(datastore: BlobStore, blob: str) -> ServingStatus | None:
    """What serves the champion; None when nothing was ever deployed (or the blob cannot be read: logged, and the
    next tick rewrites it)."""
    try:
        return ServingStatus.model_validate_json(datastore.read(blob))
    except BlobMissingError:
        return None
    except ValidationError as error:
        log.error("%s is not a serving status: %s", blob, str(error)[:300])
        return None


def status_store(datastore: BlobStore, blob: str) -> StatusStore:
    return StatusStore(
        load=lambda: read_serving_status(datastore, blob),
        save=lambda status: datastore.write_json(blob, status.model_dump(mode="json")),
    )
