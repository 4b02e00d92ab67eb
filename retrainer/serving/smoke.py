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
from retrainer.ingestion.ingest import Layout
from retrainer.serving.contract import InvalidAnswer, detections, scoring_request
from retrainer.serving.endpoint import Endpoint, ScoringFailed
from retrainer.serving.rollout import Champion, SmokeResult
from shared.contracts import SplitAssignment, SplitSide
from shared.evaluation.comparison import match, weighted_map50
from shared.evaluation.sheets import Sheet, from_contract, sheet_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmokeSheet:
    """A holdout sheet: its image as stored, and its symbols in pixels."""

    image: bytes
    sheet: Sheet


@dataclass(frozen=True)
class SmokeSample:
    """The sheets to score, and how many holdout sheets the split assignment names (0: no holdout yet)."""

    sheets: list[SmokeSheet]
    holdout: int = 0


def holdout_sheets(
    assignment: Callable[[], bytes | None], datastore: BlobStore, layout: Layout, count: int
) -> SmokeSample:
    """`count` holdout sheets of the split assignment, the same ones every time (while the holdout stays).

    The assignment names a sheet by its image's file name; images (and so their labels) may lie in sub-folders,
    so each name is found among the stored images, and its label record confirms it by its `image_url`.
    """
    content = assignment()
    if not content:
        return SmokeSample([])
    names = [name for name, side in SplitAssignment.from_bytes(content).by_name.items() if side == SplitSide.HOLDOUT]
    stems: dict[str, list[str]] = {}
    for blob in datastore.list(layout.image_folder + "/"):
        stem = layout.stem_of_image(blob.name)
        if stem is not None:
            stems.setdefault(PurePosixPath(blob.name).name, []).append(stem)
    chosen = []
    for name in sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest()):
        smoke = _smoke_sheet(name, sorted(stems.get(name, [])), datastore, layout)
        if smoke is not None:
            chosen.append(smoke)
        if len(chosen) == count:
            break
    return SmokeSample(chosen, len(names))


def _smoke_sheet(name: str, stems: list[str], datastore: BlobStore, layout: Layout) -> SmokeSheet | None:
    """The first of the images named `name` whose label record names it; None when an image or label was
    deleted since the split (the next sheet stands in)."""
    for stem in stems:
        try:
            record = json.loads(datastore.read(layout.jsonl_path(stem)))
            if PurePosixPath(record["image_url"]).name != name:  # the assignment's key (pipeline_steps.split_sides)
                continue
            image_path = f"{layout.image_folder}/{record['image_url']}"
            image = datastore.read(image_path)
        except BlobMissingError:
            continue
        return SmokeSheet(image, sheet_of(record, Path(image_path), record["image_url"], image))
    return None


class SmokeTest:
    """Score the smoke sheets through one deployment and hold their mAP@0.5 to the champion's recorded figure."""

    def __init__(self, sheets: Callable[[], SmokeSample], tolerance: float) -> None:
        self._sheets = sheets
        self._tolerance = tolerance

    def __call__(self, endpoint: Endpoint, deployment: str, champion: Champion) -> SmokeResult:
        sample = self._sheets()
        sheets, expected, tolerance = sample.sheets, champion.score, self._tolerance
        if not sheets and sample.holdout:
            message = (
                f"none of the {sample.holdout} holdout sheets of the split assignment could be read from the "
                "datastore (image or label record missing): nothing to hold the deployment to"
            )
            log.warning("smoke test of %s: %s", deployment, message)
            return SmokeResult(sheets=0, expected=expected, tolerance=tolerance, passed=False, message=message)
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
                answer = endpoint.score(scoring_request([smoke.image]), deployment)
                detections(answer, 1)
                predictions.append(from_contract(answer[0]["boxes"], smoke.sheet))
            except (ScoringFailed, ValueError) as error:  # InvalidAnswer is a ValueError
                message = f"{smoke.sheet.path.name}: {error}"
                return SmokeResult(
                    sheets=len(sheets), expected=expected, tolerance=tolerance, passed=False, message=message
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
