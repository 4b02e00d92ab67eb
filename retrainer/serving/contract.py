"""The scoring contract over HTTP: what a client sends an endpoint, and what it answers.

Request (Azure ML's MLflow scoring, pandas' split orient, one column of base64 images):
    {"input_data": {"columns": ["image"], "data": [["<base64 JPEG>"], ...]}}
Answer, one object per image, in order (AutoML for Images' object detection output):
    [{"boxes": [{"box": {"topX", "topY", "bottomX", "bottomY"}, "label": "3", "score": 0.97}, ...]}, ...]
Coordinates are normalised to [0, 1].
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class InvalidAnswer(ValueError):
    """An endpoint's answer does not follow the contract; the message says where."""


@dataclass(frozen=True)
class Detection:
    """One symbol found: its box in [0, 1] image coordinates, its class id and its score."""

    top_x: float
    top_y: float
    bottom_x: float
    bottom_y: float
    label: str
    score: float


def scoring_request(images: Sequence[bytes]) -> dict[str, Any]:
    """The request body that asks for the symbols on each image (JPEG or PNG bytes)."""
    return {
        "input_data": {"columns": ["image"], "data": [[base64.b64encode(image).decode("ascii")] for image in images]}
    }


def detections(answer: Any, images: int) -> list[list[Detection]]:
    """The detections per image of an answer to a request of `images` images; InvalidAnswer when it breaks the
    contract (another shape, a box outside the image, a score that is not a probability)."""
    if not isinstance(answer, list) or len(answer) != images:
        got = f"a list of {len(answer)}" if isinstance(answer, list) else type(answer).__name__
        raise InvalidAnswer(f"expected a list of {images} image results, got {got}")
    found = []
    for index, result in enumerate(answer):
        if not isinstance(result, dict) or not isinstance(result.get("boxes"), list):
            raise InvalidAnswer(f"image {index}: expected an object with a list 'boxes'")
        found.append([_detection(index, box) for box in result["boxes"]])
    return found


def _detection(index: int, item: Any) -> Detection:
    try:
        box, label, score = item["box"], str(item["label"]), float(item["score"])
        corners = [float(box[key]) for key in ("topX", "topY", "bottomX", "bottomY")]
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidAnswer(f"image {index}: a box without box/label/score ({error})") from None
    if not all(math.isfinite(v) and -1e-6 <= v <= 1 + 1e-6 for v in corners) or not 0 <= score <= 1:
        raise InvalidAnswer(f"image {index}: box {corners} or score {score} outside [0, 1]")
    if corners[0] > corners[2] or corners[1] > corners[3]:
        raise InvalidAnswer(f"image {index}: box {corners} has its corners the wrong way round")
    top_x, top_y, bottom_x, bottom_y = corners
    return Detection(top_x, top_y, bottom_x, bottom_y, label, score)
