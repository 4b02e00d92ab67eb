"""The Event Grid contract of the service: event types, and blob subjects built and parsed in one place.

Storage events name a blob by a subject `/blobServices/default/containers/<container>/blobs/<path>`;
the path part is URL-encoded by Event Grid. Everything past this module works with paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

BLOB_CREATED = "Microsoft.Storage.BlobCreated"

#: Upload APIs that complete a blob; other BlobCreated events (e.g. PutBlock) are partial writes.
COMPLETING_APIS = frozenset({"PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"})

#: Azure ML's own events about a run (the service follows its runs at once when they arrive).
WORKSPACE_RUN_EVENTS = frozenset(
    {"Microsoft.MachineLearningServices.RunCompleted", "Microsoft.MachineLearningServices.RunStatusChanged"}
)

MODEL_PROMOTED = "PidSymbolRetraining.ModelPromoted"

_SUBJECT_PREFIX = "/blobServices/default/containers/"
_BLOBS = "/blobs/"


@dataclass(frozen=True)
class BlobRef:
    container: str
    path: str


def build_subject(container: str, path: str) -> str:
    """The subject Event Grid gives a BlobCreated event of `path` in `container`."""
    return f"{_SUBJECT_PREFIX}{container}{_BLOBS}{quote(path, safe='/')}"


def parse_subject(subject: str) -> BlobRef | None:
    """The blob a storage event's subject names, or None when the subject is not a blob subject."""
    if not subject.startswith(_SUBJECT_PREFIX):
        return None
    container, separator, encoded_path = subject[len(_SUBJECT_PREFIX) :].partition(_BLOBS)
    if not separator or not container or not encoded_path:
        return None
    return BlobRef(container, unquote(encoded_path))
