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
#: Azure caps blob names at 1,024 characters; a longer subject names no blob of ours.
MAX_PATH_CHARS = 1024


@dataclass(frozen=True)
class BlobRef:
    container: str
    path: str


def build_subject(container: str, path: str) -> str:
    """The subject Event Grid gives a BlobCreated event of `path` in `container`."""
    return f"{_SUBJECT_PREFIX}{container}{_BLOBS}{quote(path, safe='/')}"


def parse_subject(subject: object) -> BlobRef | None:
    """The blob a storage event's subject names, or None when it names none safely.

    The path must stay where it says it is: no '.', '..' or empty segments (also when spelled
    `%2F` or `%2E`), no backslashes or control characters, at most MAX_PATH_CHARS characters.
    """
    if not isinstance(subject, str) or len(subject) > 12 * MAX_PATH_CHARS + 200:  # %-encoded UTF-8
        return None
    if not subject.startswith(_SUBJECT_PREFIX):
        return None
    container, separator, encoded_path = subject[len(_SUBJECT_PREFIX) :].partition(_BLOBS)
    if not separator or not container or not encoded_path:
        return None
    path = unquote(encoded_path)
    if len(path) > MAX_PATH_CHARS or "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return None
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        return None
    return BlobRef(container, path)


@dataclass(frozen=True)
class Event:
    """An Event Grid event in either delivery schema (Event Grid's own, or CloudEvents 1.0)."""

    id: str
    event_type: str
    subject: str
    data: dict[str, object]


def read_event(event: object) -> Event:
    """The fields the service uses, from `func.EventGridEvent` or `func.CloudEvent`; odd values become empty."""
    event_type = getattr(event, "event_type", None) or getattr(event, "type", None)
    try:
        data = event.get_json()  # type: ignore[attr-defined]
    except (ValueError, TypeError, AttributeError):
        data = None
    return Event(
        id=str(getattr(event, "id", "") or "")[:200],
        event_type=event_type if isinstance(event_type, str) else "",
        subject=getattr(event, "subject", None) or "",
        data=data if isinstance(data, dict) else {},
    )
