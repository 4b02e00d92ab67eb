"""The serving status as a blob (SERVING_STATUS_BLOB): written by the rollout, read by every page and command."""

from __future__ import annotations

from retrainer.datastore import BlobStore, InvalidDocumentError, read_document, write_document
from retrainer.serving.rollout import ServingStatus, StatusStore


def read_serving_status(datastore: BlobStore, blob: str) -> ServingStatus | None:
    """What serves the champion; None when nothing was ever deployed (or the blob cannot be read: logged, and the
    next tick rewrites it)."""
    try:
        return read_document(datastore, blob, ServingStatus)
    except InvalidDocumentError:
        return None


def status_store(datastore: BlobStore, blob: str) -> StatusStore:
    return StatusStore(
        load=lambda: read_serving_status(datastore, blob),
        save=lambda status: write_document(datastore, blob, status),
    )
