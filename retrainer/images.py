"""Image size from the first bytes of an image file (pure; no decoding of pixels)."""

from __future__ import annotations

import io
from pathlib import PurePosixPath

import imagesize

#: Formats AutoML for Images reads (OpenCV); the key is the file extension.
IMAGE_FORMATS = {".jpg": "jpg", ".jpeg": "jpeg", ".png": "png", ".bmp": "bmp", ".tif": "tif", ".tiff": "tiff"}

#: Prefix lengths tried in turn to find the size; a JPEG with a large EXIF block needs more than the first.
HEADER_READ_STEPS = (64 * 1024, 1024 * 1024, 32 * 1024 * 1024)


def image_format(path: str) -> str | None:
    """The AutoML format name of a path by its extension, or None when it is not an image."""
    return IMAGE_FORMATS.get(PurePosixPath(path).suffix.lower())


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) in stored pixels from the file's leading bytes, or None when not found there."""
    width, height = imagesize.get(io.BytesIO(head), exif_rotation=False)
    if width <= 0 or height <= 0:
        return None
    return width, height
