"""The Event Grid contract of the service: event types, blob subjects built and parsed, and events turned
into commands, in one place.

Storage events name a blob by a subject `/blobServices/default/containers/<container>/blobs/<path>`;
the path part is URL-encoded by Event Grid. Every event becomes one typed command here
(`ImageUploaded`, `RunChanged` or `Ignored` with its reason); the service takes commands, never payloads.
"""

from __future__ import annotations

import re
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
SERVING_FAILED = "PidSymbolRetraining.ServingFailed"

_SUBJECT_PREFIX = "/blobServices/default/containers/"
_BLOBS = "/blobs/"
#: Azure caps blob names at 1,024 characters; a longer subject names no blob of ours.
MAX_PATH_CHARS = 1024
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
_MAX_ETAG_CHARS = 200


def is_run_id(value: object) -> bool:
    """Run ids are short and key-safe (Azure ML job names, local run folders); anything else names no run."""
    return isinstance(value, str) and bool(_RUN_ID.fullmatch(value))


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


@dataclass(frozen=True)
class ImageUploaded:
    """A blob finished uploading: which one, and which version of it."""

    blob: BlobRef
    etag: str


@dataclass(frozen=True)
class RunChanged:
    """Azure ML says a run changed state."""

    run_id: str


@dataclass(frozen=True)
class Ignored:
    """An event the service does not act on, and why (logged, never raised: Event Grid would redeliver)."""

    reason: str


Command = ImageUploaded | RunChanged | Ignored


def to_command(event: Event) -> Command:
    """The one place an event's payload is read: its type, subject, `api`, `eTag` and `runId`."""
    data = event.data
    if event.event_type == BLOB_CREATED:
        api = data.get("api")
        if not isinstance(api, str) or api not in COMPLETING_APIS:  # a list or a dict is not even hashable
            return Ignored(f"not a completed upload (api {str(api)[:40]!r})")
        blob = parse_subject(event.subject)
        if blob is None:
            return Ignored("the subject names no blob safely")
        etag = data.get("eTag") or data.get("etag")
        if not isinstance(etag, str) or not etag or len(etag) > _MAX_ETAG_CHARS:
            return Ignored(f"BlobCreated for {blob.path[:200]} carries no usable eTag")
        return ImageUploaded(blob, etag)
    if event.event_type in WORKSPACE_RUN_EVENTS:
        run_id = data.get("runId") or data.get("RunId")
        if not is_run_id(run_id):
            return Ignored("the run event names no run id")
        return RunChanged(str(run_id))
    return Ignored(f"event type {event.event_type[:100]!r} is not one the service handles")
