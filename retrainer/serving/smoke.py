"""The smoke test of a new deployment: a few holdout sheets through the endpoint, before it takes any traffic.

Its answers must follow the contract, and their mAP@0.5 must be within a tolerance of the figure the champion's
promotion recorded on the holdout: a few sheets vary too much to rank models, but enough to catch a deployment
that is broken (another model, a preprocessing fault, a server that answers nothing). The sheets are a fixed
sample of the holdout (by a hash of their names), read from the datastore; one request per sheet.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from retrainer.datastore import BlobMissingError, BlobStore
from retrainer.serving.contract import InvalidAnswer, detections, scoring_request
from retrainer.serving.endpoint import Endpoint, ScoringFailed
from retrainer.serving.rollout import Champion, SmokeResult
from retrainer.settings import Settings
from shared.contracts import SplitAssignment, SplitSide
from shared.evaluation.comparison import match, weighted_map50
from shared.evaluation.sheets import Prediction, Sheet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmokeSheet:
    """A holdout sheet: its image as stored, and its symbols in pixels."""

    image: bytes
    sheet: Sheet


def holdout_sheets(
    assignment: Callable[[], bytes | None], datastore: BlobStore, settings: Settings, count: int
) -> list[SmokeSheet]:
    """`count` holdout sheets of the split assignment, the same ones every time (while the holdout stays)."""
    content = assignment()
    if not content:
        return []
    names = [name for name, side in SplitAssignment.from_bytes(content).by_name.items() if side == SplitSide.HOLDOUT]
    chosen = []
    for name in sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest()):
        try:
            image = datastore.read(f"{settings.IMAGE_FOLDER}/{name}")
            record = json.loads(datastore.read(f"{settings.LABEL_FOLDER}/{PurePosixPath(name).stem}.jsonl"))
        except BlobMissingError:
            continue  # an image or label deleted since the split: the next sheet stands in
        chosen.append(SmokeSheet(image, _sheet(name, record)))
        if len(chosen) == count:
            break
    return chosen


def _sheet(name: str, record: dict) -> Sheet:
    details = record.get("image_details") or {}
    width, height = int(details.get("width") or 1), int(details.get("height") or 1)
    kept = [box for box in record.get("label", []) if not box.get("isCrowd")]
    boxes = np.array(
        [[b["topX"] * width, b["topY"] * height, b["bottomX"] * width, b["bottomY"] * height] for b in kept],
        dtype=np.float32,
    ).reshape(-1, 4)
    return Sheet(Path(name), width, height, boxes, tuple(str(b["label"]) for b in kept))


class SmokeTest:
    """Score the smoke sheets through one deployment and hold their mAP@0.5 to the champion's recorded figure."""

    def __init__(self, sheets: Callable[[], list[SmokeSheet]], tolerance: float) -> None:
        self._sheets = sheets
        self._tolerance = tolerance

    def __call__(self, endpoint: Endpoint, deployment: str, champion: Champion) -> SmokeResult:
        sheets = self._sheets()
        expected, tolerance = champion.score, self._tolerance
        if not sheets:
            sheets_answer = "no holdout sheets to score: checked that it answers"
            try:
                detections(endpoint.score(scoring_request([_BLANK_PNG]), deployment), 1)
            except (ScoringFailed, InvalidAnswer) as error:
                return SmokeResult(sheets=0, expected=expected, tolerance=tolerance, passed=False, message=str(error))
            return SmokeResult(sheets=0, expected=expected, tolerance=tolerance, passed=True, message=sheets_answer)
        predictions = []
        for smoke in sheets:
            try:
                (found,) = detections(endpoint.score(scoring_request([smoke.image]), deployment), 1)
            except (ScoringFailed, InvalidAnswer) as error:
                message = f"{smoke.sheet.path.name}: {error}"
                return SmokeResult(
                    sheets=len(sheets), expected=expected, tolerance=tolerance, passed=False, message=message
                )
            width, height = smoke.sheet.width, smoke.sheet.height
            boxes = np.array(
                [[d.top_x * width, d.top_y * height, d.bottom_x * width, d.bottom_y * height] for d in found]
            )
            predictions.append(
                Prediction(boxes.reshape(-1, 4), np.array([d.score for d in found]), tuple(d.label for d in found))
            )
        plain = [smoke.sheet for smoke in sheets]
        classes = sorted({label for sheet in plain for label in sheet.labels})
        figure = float(weighted_map50(match(plain, predictions, classes), np.ones(len(plain)))[0])
        passed = expected is None or figure >= expected - tolerance
        held = (
            "no recorded figure to hold it to" if expected is None else f"the champion's {expected:.3f} - {tolerance:g}"
        )
        verdict = "within" if passed else "below"
        message = f"mAP@0.5 {figure:.3f} on {len(plain)} holdout sheets, {verdict} {held}"
        log.info("smoke test of %s: %s", deployment, message)
        return SmokeResult(
            sheets=len(plain),
            map50=round(figure, 4),
            expected=expected,
            tolerance=tolerance,
            passed=passed,
            message=message,
        )


#: A 1 x 1 white PNG: what a deployment is asked when there is no holdout to ask about.
_BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c4944415408d763f8ffff3f0005fe02fea7d6a4e60000000049454e44ae426082"
)
