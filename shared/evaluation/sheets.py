"""Annotated sheets from AutoML JSONL (`file://` image URLs) and predictions on them: numpy only, so that scoring,
the comparison and the serving smoke test read them alike (Pillow is imported only to size an image)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

from shared.mltable_io import class_sort_key, read_records


@dataclass(frozen=True)
class Sheet:
    """One image with its boxes in pixels and labels as class-id strings."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2
    labels: tuple[str, ...]
    #: The image's path inside its image folder (`sub/a.jpg`), the same under any mount point or run folder;
    #: empty where the folder is not known (then the file name stands for it).
    key: str = ""

    def relative_name(self) -> str:
        return self.key or self.path.name


@dataclass(frozen=True)
class Prediction:
    """A model's detections on one sheet."""

    boxes: np.ndarray  # (N, 4) pixels x1 y1 x2 y2
    scores: np.ndarray  # (N,)
    labels: tuple[str, ...]  # class ids


def image_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme not in ("file", ""):
        raise ValueError(f"the local trainer reads file:// image URLs, got {url!r}")
    return Path(unquote(parts.path))


def _local_image(url: str, images_folder: Path | None, images_prefix: str) -> tuple[Path, str]:
    """Where the image is read from, and its path inside the image folder ("" where that folder is unknown).

    On Azure ML the URL is `<images_prefix>/<relative>` and the folder is mounted at `images_folder`; a local
    run's URLs are `file://` paths inside `images_folder` itself.
    """
    prefix = images_prefix.rstrip("/") + "/"
    if images_folder is not None and images_prefix and url.startswith(prefix):
        relative = unquote(url[len(prefix) :])
        if ".." in relative.split("/"):
            raise ValueError(f"image URL {url!r} leaves the image folder")
        return images_folder / relative, relative
    path = image_path(url)
    if images_folder is not None and path.is_relative_to(root := images_folder.resolve()):
        return path, path.relative_to(root).as_posix()
    return path, ""


def load_sheets(mltable_folder: Path, *, images_folder: Path | None = None, images_prefix: str = "") -> list[Sheet]:
    """Every record of an MLTable folder (its annotations.jsonl); crowd boxes are left out.

    On Azure ML image URLs are `azureml://` paths under `images_prefix`; with `images_folder` (where
    that folder is mounted) they are read from the mount.
    """
    sheets = []
    for record in read_records(mltable_folder):
        path, key = _local_image(record["image_url"], images_folder, images_prefix)
        sheets.append(sheet_of(record, path, key))
    return sheets


def sheet_of(record: dict, path: Path, key: str = "", image: bytes | None = None) -> Sheet:
    """One AutoML record as a sheet read from `path`; crowd boxes are left out. Without a size in its
    `image_details` the image is measured: `image` (its bytes) when given, else the file at `path`."""
    details = record.get("image_details") or {}
    width, height = details.get("width"), details.get("height")
    if not width or not height:
        from PIL import Image

        with Image.open(io.BytesIO(image) if image is not None else path) as opened:
            width, height = opened.size
    kept = [box for box in record["label"] if not box.get("isCrowd")]
    boxes = np.array(
        [[b["topX"] * width, b["topY"] * height, b["bottomX"] * width, b["bottomY"] * height] for b in kept],
        dtype=np.float32,
    ).reshape(-1, 4)
    return Sheet(path, int(width), int(height), boxes, tuple(str(b["label"]) for b in kept), key)


def from_contract(boxes: list[dict], sheet: Sheet) -> Prediction:
    """AutoML's normalised boxes back to the sheet's pixels; ValueError for an answer outside the contract."""
    try:
        coordinates = np.array(
            [[b["box"]["topX"], b["box"]["topY"], b["box"]["bottomX"], b["box"]["bottomY"]] for b in boxes],
            dtype=np.float32,
        ).reshape(-1, 4)
        scores = np.array([float(b["score"]) for b in boxes], dtype=np.float32)
        labels = tuple(str(b["label"]) for b in boxes)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"an answer for {sheet.path.name} is not a box of the scoring contract: {error!r}") from None
    if not (np.isfinite(coordinates).all() and np.isfinite(scores).all()):  # a diverged model answers NaN
        raise ValueError(f"the answer for {sheet.path.name} holds non-finite coordinates or scores")
    scale = np.array([sheet.width, sheet.height, sheet.width, sheet.height], dtype=np.float32)
    return Prediction(coordinates * scale, scores, labels)


def class_vocabulary(*sheet_sets: list[Sheet]) -> list[str]:
    """Class ids in numeric order; index i of the list is model label i + 1."""
    labels = {label for sheets in sheet_sets for sheet in sheets for label in sheet.labels}
    return sorted(labels, key=class_sort_key)
