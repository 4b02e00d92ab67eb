"""The datastore container in Azure Blob Storage (Azurite locally): the only module that talks to blobs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings
from pydantic import BaseModel, ValidationError

from retrainer.images import HEADER_READ_STEPS, image_format, image_size
from retrainer.settings import Settings
from shared.identity import signed_in_credential

log = logging.getLogger(__name__)

DocumentT = TypeVar("DocumentT", bound=BaseModel)

_CONTENT_TYPES = {".json": "application/json", ".jsonl": "application/jsonl", ".npy": "application/octet-stream"}


#: Every storage call is bounded: a few retries with short back-off (the blob SDK's own default waits
#: 15 s, 18 s, 24 s... per call: minutes of silence when storage is gone), and timeouts.
BLOB_CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "initial_backoff": 1,
    "increment_base": 2,
    "connection_timeout": 10,
    "read_timeout": 60,
}
TABLE_CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 8,
    "connection_timeout": 10,
    "read_timeout": 60,
}


class BlobMissingError(LookupError):
    """The blob does not exist (any more)."""


class InvalidDocumentError(ValueError):
    """A JSON document blob exists but does not validate as the model it is read as (logged with the details)."""


class LockBusy(TimeoutError):
    """Another holder kept the lock for longer than the caller waits."""


#: A lock's lease lapses this long after its holder died (Blob Storage allows 15 to 60 s).
LOCK_LEASE_SECONDS = 60


@dataclass(frozen=True)
class StoredBlob:
    name: str
    size: int
    content_md5: bytes | None


@dataclass(frozen=True)
class ImageInfo:
    path: str
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class QuarantineReason:
    """Why a file was quarantined: what a person reads in its `.reason.json`, beside the file."""

    reason: str
    rule: str
    handler: str
    row: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "rule": self.rule, "handler": self.handler, "row": self.row}


class BlobStore(Protocol):
    """The blob operations the service's state needs (the best model, serving status, locks): `Datastore` on
    Azure Blob Storage, or the fast tier's in-memory container."""

    def read(self, path: str) -> bytes: ...

    def read_with_etag(self, path: str) -> tuple[bytes, str]: ...

    def exists(self, path: str) -> bool: ...

    def etag(self, path: str) -> str: ...

    def write(self, path: str, data: bytes) -> None: ...

    def write_json(self, path: str, document: object) -> None: ...

    def delete(self, path: str, etag: str | None = None) -> None: ...

    def list(self, prefix: str) -> Iterator[StoredBlob]: ...

    def exclusive(self, path: str, wait_seconds: float = 90.0) -> contextlib.AbstractContextManager[None]: ...


def read_document(store: BlobStore, path: str, model: type[DocumentT]) -> DocumentT | None:
    """The JSON document at `path` as a `model`; None when there is none; InvalidDocumentError when it does not
    validate (the validation's words go to the log, never further)."""
    try:
        return model.model_validate_json(store.read(path))
    except BlobMissingError:
        return None
    except ValidationError as error:
        log.error("%s is not a valid %s: %s", path, model.__name__, str(error)[:300])
        raise InvalidDocumentError(f"{path} is not a valid {model.__name__}") from None


def write_document(store: BlobStore, path: str, document: BaseModel) -> None:
    """Write a document as `read_document` reads it back."""
    store.write_json(path, document.model_dump(mode="json"))


class Datastore:
    """Reads and writes blobs of one container; paths are relative to the container."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    @classmethod
    def from_connection_string(cls, connection_string: str, container_name: str) -> Datastore:
        service = BlobServiceClient.from_connection_string(connection_string, **BLOB_CLIENT_OPTIONS)
        return cls(service.get_container_client(container_name))

    @classmethod
    def from_settings(cls, settings: Settings) -> Datastore:
        """The container the settings name, by connection string or keyless by identity."""
        connection = settings.storage_connection()
        if connection.connection_string is not None:
            return cls.from_connection_string(connection.connection_string, settings.STORAGE_ACCOUNT_CONTAINER_NAME)
        service = BlobServiceClient(
            account_url=str(connection.blob_service_uri),
            credential=signed_in_credential(connection.client_id),
            **BLOB_CLIENT_OPTIONS,
        )
        return cls(service.get_container_client(settings.STORAGE_ACCOUNT_CONTAINER_NAME))

    def ensure_container(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()

    def read(self, path: str) -> bytes:
        try:
            return self._container.download_blob(path).readall()
        except ResourceNotFoundError:
            raise BlobMissingError(path) from None

    def read_head(self, path: str, length: int) -> bytes:
        try:
            return self._container.download_blob(path, offset=0, length=length).readall()
        except ResourceNotFoundError:
            raise BlobMissingError(path) from None

    def exists(self, path: str) -> bool:
        return self._container.get_blob_client(path).exists()

    def etag(self, path: str) -> str:
        try:
            return self._container.get_blob_client(path).get_blob_properties().etag
        except ResourceNotFoundError:
            raise BlobMissingError(path) from None

    def write(self, path: str, data: bytes) -> None:
        """Write (overwrite) a blob, storing its MD5 so that later runs can skip identical content."""
        suffix = path[path.rfind(".") :].lower() if "." in path else ""
        self._container.upload_blob(
            path,
            data,
            overwrite=True,
            content_settings=ContentSettings(
                content_type=_CONTENT_TYPES.get(suffix, "application/octet-stream"),
                content_md5=bytearray(hashlib.md5(data).digest()),
            ),
        )

    @contextlib.contextmanager
    def exclusive(self, path: str, wait_seconds: float = 90.0) -> Iterator[None]:
        """Hold a lease on the blob `path` (made empty when missing): one holder at a time, across processes and
        machines. A holder that dies loses it within LOCK_LEASE_SECONDS; LockBusy after `wait_seconds`."""
        blob = self._container.get_blob_client(path)
        with contextlib.suppress(ResourceExistsError):
            blob.upload_blob(b"", overwrite=False)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                lease = blob.acquire_lease(lease_duration=LOCK_LEASE_SECONDS)
                break
            except HttpResponseError as error:
                if error.status_code != 409 or time.monotonic() > deadline:
                    if error.status_code == 409:
                        raise LockBusy(f"{path} stayed locked for {wait_seconds:g} s; try again") from None
                    raise
                time.sleep(0.2)
        try:
            yield
        finally:
            with contextlib.suppress(HttpResponseError):
                lease.release()

    def write_unless_identical(self, path: str, data: bytes) -> bool:
        """Write unless the stored blob already has this content; True when it wrote."""
        try:
            stored = self._container.get_blob_client(path).get_blob_properties().content_settings.content_md5
        except ResourceNotFoundError:
            stored = None
        if stored == hashlib.md5(data).digest():
            return False
        self.write(path, data)
        return True

    def write_json(self, path: str, document: object) -> None:
        self.write(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def delete(self, path: str, etag: str | None = None) -> None:
        """Delete a blob; with an etag only if it has not changed since that etag was read."""
        with contextlib.suppress(ResourceNotFoundError):
            if etag:
                self._container.delete_blob(path, etag=etag, match_condition=MatchConditions.IfNotModified)
            else:
                self._container.delete_blob(path)

    def list(self, prefix: str) -> Iterator[StoredBlob]:
        """Blobs under the prefix; none when the container does not exist yet."""
        try:
            for blob in self._container.list_blobs(name_starts_with=prefix):
                md5 = blob.content_settings.content_md5
                yield StoredBlob(blob.name, blob.size, bytes(md5) if md5 else None)
        except ResourceNotFoundError:
            return

    def read_image_info(self, path: str) -> ImageInfo | None:
        """Width and height read from the image's first bytes; None when it is not a readable image."""
        fmt = image_format(path)
        if fmt is None:
            return None
        for length in HEADER_READ_STEPS:
            head = self.read_head(path, length)
            size = image_size(head)
            if size is not None:
                return ImageInfo(path, size[0], size[1], fmt)
            if len(head) < length:
                break
        return None

    def read_with_etag(self, path: str) -> tuple[bytes, str]:
        """The blob's bytes and the etag of exactly that version."""
        try:
            downloader = self._container.download_blob(path)
        except ResourceNotFoundError:
            raise BlobMissingError(path) from None
        return downloader.readall(), downloader.properties.etag

    def size(self, path: str) -> int:
        try:
            return int(self._container.get_blob_client(path).get_blob_properties().size)
        except ResourceNotFoundError:
            raise BlobMissingError(path) from None

    def quarantine(
        self,
        path: str,
        reason: QuarantineReason,
        quarantine_folder: str,
        *,
        original_etag: str | None,
        data: bytes | None = None,
    ) -> bool:
        """Store the blob under the quarantine folder with a reason beside it; then delete the original.

        Returns True when the original was removed (or none was to be), False when a newer version
        was left in place.

        `data` is the content already read; without it the blob is copied in chunks (a file too large
        to read is quarantined without ever being held in memory). The original (when
        `original_etag` is given) is deleted only once the copy is confirmed, and only if it is still
        the version that was read: a newer upload is left for its own event.
        """
        target = f"{quarantine_folder}/{path}"
        if data is not None:
            self.write(target, data)
            expected_size = len(data)
        else:
            expected_size = self._copy_in_chunks(path, target, original_etag)
        stored = self._container.get_blob_client(target).get_blob_properties()
        confirmed = stored.size == expected_size and (
            data is None or stored.content_settings.content_md5 == hashlib.md5(data).digest()
        )
        if not confirmed:
            raise OSError(f"quarantine copy of {path} could not be confirmed; the original is kept")
        self.write_json(
            f"{target}.reason.json",
            {"source": path, "quarantined_at": datetime.now(UTC).isoformat(), **reason.as_dict()},
        )
        removed = True
        if original_etag is not None:
            try:
                self.delete(path, etag=original_etag)
            except ResourceModifiedError:
                removed = False
                log.warning("%s changed after it was read; the new version is kept for its own event", path)
        log.warning("quarantined %s: %s", path, reason.reason[:300])
        return removed

    def _copy_in_chunks(self, source: str, target: str, etag: str | None) -> int:
        """Copy a blob through this process a few MiB at a time; returns the size copied."""
        try:
            if etag:
                downloader = self._container.download_blob(
                    source, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            else:
                downloader = self._container.download_blob(source)
        except ResourceNotFoundError:
            raise BlobMissingError(source) from None
        copied = 0

        def chunks() -> Iterator[bytes]:
            nonlocal copied
            for chunk in downloader.chunks():
                copied += len(chunk)
                yield chunk

        self._container.upload_blob(target, chunks(), overwrite=True)
        return copied
