"""The tag step's scorer: both models on the same fixed sample of the holdout, and the interval on their difference.

Each model is fetched from the registry and scored through the scoring contract (`pipeline_steps/evaluation/`),
within a budget that counts everything from the start; a paired bootstrap gives the challenger's mAP@0.5 minus
the champion's, overall and per class (the class guard). Whatever stops a comparison is a `ScoringUnavailable`
that says whose it was, so the decision (`pipeline_steps/tag_model.py`) takes the safe path.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline_steps.evaluation.scoring import ModelNotScorable, ModelRuntime, score_models, scoring_sample
from shared.evaluation.comparison import (
    ClassMatches,
    class_ap50,
    match,
    paired_bootstrap,
    per_class_bootstrap,
    weighted_map50,
)
from shared.evaluation.sheets import class_vocabulary, load_sheets
from shared.mltable_io import class_sort_key
from shared.promotion import ClassComparison, ClassGuard, DifferenceInterval
from shared.records import ModelVersion
from shared.registry import ModelRegistry


@dataclass(frozen=True)
class HoldoutScores:
    """The challenger (and the champion, when there is one) scored on the same holdout images."""

    challenger_score: float
    challenger_per_class: dict[str, float]
    champion_score: float | None = None
    champion_per_class: dict[str, float] | None = None
    interval: DifferenceInterval | None = None
    seconds: float = 0.0
    scored_images: int | None = None
    sample_limit: int | None = None
    stopped_by_budget: bool = False
    class_guard: ClassGuard | None = None


HoldoutScorer = Callable[[ModelVersion, ModelVersion | None], HoldoutScores]


class ScoringUnavailable(Exception):
    """The models cannot be compared on the holdout here; the record says why, and the safe path decides.

    `side` says whose failure it was: the challenger's (the champion stays), the champion's (its recorded
    score decides, or the challenger replaces a champion whose model is gone), or the holdout's.
    """

    def __init__(self, reason: str, side: Literal["challenger", "champion", "holdout"] = "holdout", gone: bool = False):
        super().__init__(reason)
        self.side = side
        self.gone = gone


def holdout_scorer(
    registry: ModelRegistry,
    holdout_folder: Path,
    *,
    confidence: float,
    resamples: int,
    runtime: ModelRuntime,
    max_images: int | None = None,
    budget_minutes: float | None = None,
    images_folder: Path | None = None,
    images_prefix: str = "",
    min_class_instances: int = 20,
    max_class_ap_drop: float = 0.10,
    class_names: dict[str, str] | None = None,
) -> HoldoutScorer:
    """Score both models on a fixed sample of the holdout through the scoring contract; bootstrap the difference,
    overall and per class."""

    def score(challenger: ModelVersion, champion: ModelVersion | None) -> HoldoutScores:
        started = time.monotonic()  # the budget counts everything: reading the holdout, fetching the models
        deadline = None if budget_minutes is None else started + budget_minutes * 60
        sheets = load_sheets(holdout_folder, images_folder=images_folder, images_prefix=images_prefix)
        if not sheets:
            raise ScoringUnavailable(f"the holdout {holdout_folder} holds no images")
        sample = scoring_sample(sheets, max_images)
        models = [challenger] if champion is None else [challenger, champion]
        sides: list[Literal["challenger", "champion"]] = ["challenger", "champion"]
        with tempfile.TemporaryDirectory() as scratch:
            folders = [
                _fetch(registry, v, Path(scratch) / v.version, side)
                for v, side in zip(models, sides[: len(models)], strict=True)
            ]
            try:
                scored = score_models(folders, sample, runtime, deadline=deadline)
            except ModelNotScorable as error:  # e.g. a champion saved by an older detector architecture
                side = sides[folders.index(error.model)] if error.model in folders else "holdout"
                raise ScoringUnavailable(str(error), side) from error
        classes = class_vocabulary(scored.sheets)
        matches = [match(scored.sheets, p, classes) for p in scored.predictions]
        maps, per_class = zip(*(model_figures(m, len(scored.sheets)) for m in matches), strict=True)
        if champion is None:
            return HoldoutScores(
                maps[0],
                per_class[0],
                seconds=time.monotonic() - started,
                scored_images=len(scored.sheets),
                sample_limit=max_images,
                stopped_by_budget=scored.stopped_by_budget,
            )
        paired = paired_bootstrap(
            matches[1], matches[0], len(scored.sheets), resamples=resamples, confidence=confidence
        )
        guard = class_guard(
            matches[0],
            matches[1],
            len(scored.sheets),
            resamples=resamples,
            confidence=confidence,
            min_instances=min_class_instances,
            max_drop=max_class_ap_drop,
            names=class_names or {},
        )
        return HoldoutScores(
            maps[0],
            per_class[0],
            maps[1],
            per_class[1],
            paired,
            seconds=time.monotonic() - started,
            scored_images=len(scored.sheets),
            sample_limit=max_images,
            stopped_by_budget=scored.stopped_by_budget,
            class_guard=guard,
        )

    return score


def model_figures(matches: dict[str, ClassMatches], images: int) -> tuple[float, dict[str, float]]:
    """A model's mAP@0.5 and per-class AP@0.5 on all the scored images, from the matches the bootstrap resamples:
    at weight 1 they are faster-coco-eval's figures (`tests/test_comparison.py`), and a class without ground
    truth has no AP, as COCO's per-class table leaves it out."""
    overall = float(weighted_map50(matches, np.ones((1, images)))[0])
    per_class = {c: round(ap, 4) for c, ap in class_ap50(matches).items() if matches[c].ground_truth.any()}
    return overall, per_class


def class_guard(
    challenger: dict[str, ClassMatches],
    champion: dict[str, ClassMatches],
    images: int,
    *,
    resamples: int,
    confidence: float,
    min_instances: int,
    max_drop: float,
    names: dict[str, str],
) -> ClassGuard:
    """Each class's AP@0.5 for both models and the challenger's change, with an interval at the confidence
    adjusted for the number of guarded classes (see `ClassGuard`)."""
    instances = {c: int(m.ground_truth.sum()) for c, m in challenger.items()}
    guarded = sum(1 for count in instances.values() if count >= min_instances)
    adjusted = 1.0 - (1.0 - confidence) / max(guarded, 1)
    intervals = per_class_bootstrap(champion, challenger, images, resamples=resamples, confidence=adjusted)
    before, after = class_ap50(champion), class_ap50(challenger)
    return ClassGuard(
        min_instances=min_instances,
        max_drop=max_drop,
        confidence=adjusted,
        classes=[
            ClassComparison(
                class_id=c,
                name=names.get(c),
                instances=instances[c],
                champion_ap=round(before[c], 4),
                challenger_ap=round(after[c], 4),
                interval=interval,
            )
            for c, interval in sorted(intervals.items(), key=lambda item: class_sort_key(item[0]))
        ],
    )


def _fetch(
    registry: ModelRegistry, version: ModelVersion, scratch: Path, side: Literal["challenger", "champion"]
) -> Path:
    """The version's MLflow model folder; ScoringUnavailable (gone) when the registry no longer has its files."""
    try:
        return registry.local_model_path(version, scratch)
    except FileNotFoundError as error:
        raise ScoringUnavailable(f"{version.name}:{version.version} has no model files ({error})", side, True) from None
    except Exception as error:  # the registry's boundary: a deleted version, a network fault
        raise ScoringUnavailable(
            f"{version.name}:{version.version} could not be fetched: {error!r}", side, True
        ) from None
