"""Label ingestion: a `.npy` label in the datastore becomes `<label folder>/<stem>.jsonl`.

Used by the blob trigger (one label at a time), by the image-landing handler (labels that were
waiting for their image) and by the data loader (with the image size it already knows).
Outcomes never lose a file: converted, waiting for its image (recorded in the ledger), or
quarantined with a reason beside it.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from retrainer.datastore import BlobMissingError, BlobStore, Datastore, ImageInfo, QuarantineReason
from retrainer.images import IMAGE_FORMATS
from retrainer.ingestion.labels import (
    MAX_LABEL_FILE_BYTES,
    LabelFileError,
    convert_label_file,
    parse_label_map,
    record_to_jsonl,
)
from retrainer.ledger import Ledger

log = logging.getLogger(__name__)

LABEL_SUFFIX = "_symbols.npy"


class Outcome(enum.StrEnum):
    CONVERTED = "converted"
    WAITING_FOR_IMAGE = "waiting_for_image"
    QUARANTINED = "quarantined"
    GONE = "gone"
    IGNORED = "ignored"


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    label_path: str
    jsonl_path: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Layout:
    """Where images, labels and quarantined files live in the container."""

    image_folder: str
    label_folder: str
    quarantine_folder: str

    def stem_of_label(self, label_path: str) -> str | None:
        """`data/labels/sub/x_symbols.npy` -> `sub/x`; None for anything that is not a label file."""
        prefix = self.label_folder + "/"
        if not label_path.startswith(prefix) or not label_path.endswith(".npy"):
            return None
        relative = label_path[len(prefix) :]
        stem = relative[: -len(LABEL_SUFFIX)] if relative.endswith(LABEL_SUFFIX) else relative[: -len(".npy")]
        return stem or None

    def stem_of_image(self, image_path: str) -> str | None:
        prefix = self.image_folder + "/"
        path = PurePosixPath(image_path)
        if not image_path.startswith(prefix) or path.suffix.lower() not in IMAGE_FORMATS:
            return None
        return image_path[len(prefix) : -len(path.suffix)]

    def label_path(self, stem: str) -> str:
        return f"{self.label_folder}/{stem}{LABEL_SUFFIX}"

    def jsonl_path(self, stem: str) -> str:
        return f"{self.label_folder}/{stem}.jsonl"

    def image_relative_path(self, image_path: str) -> str:
        """The image's path relative to the image folder: what a per-image JSONL record holds as `image_url`."""
        return image_path[len(self.image_folder) + 1 :]


def read_label_map(store: BlobStore, blob_path: str) -> dict[str, str] | None:
    """The label map stored in the datastore, or None (class ids unchecked) when there is none."""
    try:
        return parse_label_map(store.read(blob_path), blob_path)
    except BlobMissingError:
        log.info("no label map at %s: class ids are not checked against one", blob_path)
        return None


class LabelIngestor:
    def __init__(
        self,
        datastore: Datastore,
        ledger: Ledger,
        layout: Layout,
        label_map: Mapping[str, str] | None,
        handler: str,
    ) -> None:
        self._datastore = datastore
        self._ledger = ledger
        self._layout = layout
        self._label_map = label_map
        self._handler = handler

    def ingest_label(self, label_path: str, image: ImageInfo | None = None) -> IngestResult:
        """Convert one stored label; `image` skips the look-up when the caller knows the image already."""
        stem = self._layout.stem_of_label(label_path)
        if stem is None:
            return IngestResult(Outcome.IGNORED, label_path, reason="not a .npy file under the label folder")
        try:
            size = self._datastore.size(label_path)
            if size > MAX_LABEL_FILE_BYTES:  # refused before it is downloaded
                return self._quarantine_unread(label_path, stem, size)
            data, etag = self._datastore.read_with_etag(label_path)
        except BlobMissingError:
            log.info("%s is gone (already quarantined or deleted); nothing to do", label_path)
            return IngestResult(Outcome.GONE, label_path)
        if image is None:
            image = self._stored_image(stem)
        if image is None:
            self._ledger.labels.record(stem, label_path)
            log.info("%s waits for its image", label_path)
            return IngestResult(Outcome.WAITING_FOR_IMAGE, label_path)
        try:
            record = convert_label_file(
                data,
                file_name=label_path,
                image_url=self._layout.image_relative_path(image.path),
                width=image.width,
                height=image.height,
                image_format=image.format,
                label_map=self._label_map,
            )
        except LabelFileError as error:
            reason = QuarantineReason(str(error), error.rule, self._handler, error.row)
            return self._quarantine(label_path, data, etag, stem, reason)
        jsonl_path = self._layout.jsonl_path(stem)
        self._datastore.write(jsonl_path, record_to_jsonl(record))
        self._ledger.labels.clear(stem)
        return IngestResult(Outcome.CONVERTED, label_path, jsonl_path)

    def ingest_image(self, image_path: str) -> IngestResult | None:
        """Called when an image lands: converts the label that was waiting for it, if any."""
        stem = self._layout.stem_of_image(image_path)
        if stem is None:
            return None
        label_path = self._layout.label_path(stem)
        if self._ledger.labels.get(stem) is None and (
            not self._datastore.exists(label_path) or self._datastore.exists(self._layout.jsonl_path(stem))
        ):
            return None  # no label yet, or it was converted when it arrived after its image
        return self.ingest_label(label_path)

    def sweep_waiting(self, limit: int = 100) -> int:
        """Try again the labels that wait for their image (an image event may have been lost or failed).

        Returns how many were converted or quarantined; the rest keep waiting.
        """
        settled = 0
        for waiting in itertools.islice(self._ledger.labels.all(), limit):
            if not self._datastore.exists(waiting.label_path):
                self._ledger.labels.clear(waiting.stem)
                continue
            if self._stored_image(waiting.stem) is not None:
                outcome = self.ingest_label(waiting.label_path).outcome
                settled += outcome in (Outcome.CONVERTED, Outcome.QUARANTINED)
        return settled

    def _stored_image(self, stem: str) -> ImageInfo | None:
        """The readable image of a stem; an unreadable one is quarantined and the label waits for a good one."""
        prefix = f"{self._layout.image_folder}/{stem}."
        candidates = [
            blob.name
            for blob in self._datastore.list(prefix)
            if PurePosixPath(blob.name).suffix.lower() in IMAGE_FORMATS and "/" not in blob.name[len(prefix) :]
        ]
        for image_path in sorted(candidates):
            image = self._datastore.read_image_info(image_path)
            if image is not None:
                return image
            self.quarantine_unreadable_image(image_path)
        return None

    def quarantine_unreadable_image(self, image_path: str) -> None:
        try:
            data, etag = self._datastore.read_with_etag(image_path)
        except BlobMissingError:
            return
        reason = QuarantineReason(f"{image_path} is not a readable image", "image", self._handler)
        self._datastore.quarantine(image_path, reason, self._layout.quarantine_folder, original_etag=etag, data=data)

    def _quarantine_unread(self, label_path: str, stem: str, size: int) -> IngestResult:
        etag = self._datastore.etag(label_path)
        reason = QuarantineReason(
            f"{label_path}: file: is {size} bytes, larger than {MAX_LABEL_FILE_BYTES}", "size", self._handler
        )
        self._datastore.quarantine(label_path, reason, self._layout.quarantine_folder, original_etag=etag)
        self._ledger.labels.clear(stem)
        return IngestResult(Outcome.QUARANTINED, label_path, reason=reason.reason)

    def _quarantine(self, label_path: str, data: bytes, etag: str, stem: str, reason: QuarantineReason) -> IngestResult:
        removed = self._datastore.quarantine(
            label_path, reason, self._layout.quarantine_folder, original_etag=etag, data=data
        )
        if removed:  # else a newer version arrived meanwhile: its JSONL (or its own event) stands
            self._datastore.delete(self._layout.jsonl_path(stem))
            self._ledger.labels.clear(stem)
        return IngestResult(Outcome.QUARANTINED, label_path, reason=reason.reason)
