"""Small builders shared by tests."""

from __future__ import annotations

import functools
import io
import json

import azure.functions as func
from PIL import Image


@functools.cache
def indexed_functions() -> dict[str, func.FunctionBuilder]:
    """What the host indexes; `get_functions()` may run once per app, as in the host."""
    import function_app

    return {fn.get_function_name(): fn for fn in function_app.app.get_functions()}


def jpeg_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, "JPEG")
    return buffer.getvalue()


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, "PNG")
    return buffer.getvalue()


def read_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
