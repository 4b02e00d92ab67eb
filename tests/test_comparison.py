"""The paired comparison on the holdout: the same mAP@0.5 as COCO's, and an interval that means something."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline_steps.evaluation.metrics import Prediction, evaluate
from pipeline_steps.holdout_scorer import model_figures
from shared.evaluation.comparison import match, paired_bootstrap, weighted_map50
from shared.evaluation.sheets import Sheet
from shared.promotion import DifferenceInterval, decide_promotion

CLASSES = ["1", "2", "3"]


def sheets_and_predictions(images: int, skill: float, seed: int) -> tuple[list[Sheet], list[Prediction]]:
    """Sheets with 3-8 boxes; a detector that finds each with probability `skill`, jittered, plus false alarms."""
    rng = np.random.default_rng(seed)
    truth_rng = np.random.default_rng(1000)  # the same sheets whatever the skill
    sheets, predictions = [], []
    for i in range(images):
        count = int(truth_rng.integers(3, 9))
        corners = truth_rng.uniform(0, 900, size=(count, 2))
        sizes = truth_rng.uniform(20, 80, size=(count, 2))
        boxes = np.hstack([corners, corners + sizes]).astype(np.float32)
        labels = tuple(str(int(c)) for c in truth_rng.integers(1, 4, size=count))
        sheets.append(Sheet(Path(f"/nowhere/{i}.jpg"), 1000, 1000, boxes, labels))
        found = rng.random(count) < skill
        jitter = rng.normal(0, 4, size=(count, 4)).astype(np.float32)
        noise_corner = rng.uniform(0, 900, size=(2, 2))
        false_boxes = np.hstack([noise_corner, noise_corner + 40]).astype(np.float32)
        predicted = np.vstack([boxes[found] + jitter[found], false_boxes])
        scores = np.concatenate([rng.uniform(0.3, 1.0, found.sum()), rng.uniform(0.05, 0.6, 2)]).astype(np.float32)
        kinds = (*(label for label, hit in zip(labels, found, strict=True) if hit), "1", "2")
        predictions.append(Prediction(predicted, scores, kinds))
    return sheets, predictions


@pytest.mark.parametrize("skill", [0.5, 0.8, 0.97])
def test_at_weight_one_the_figure_is_cocos_map50(skill: float) -> None:
    sheets, predictions = sheets_and_predictions(30, skill, seed=int(skill * 100))
    coco = evaluate(sheets, predictions, CLASSES).metrics["mean_average_precision"]
    ours = weighted_map50(match(sheets, predictions, CLASSES), np.ones((1, len(sheets))))[0]
    assert ours == pytest.approx(coco, abs=1e-6)


@pytest.mark.parametrize("skill", [0.0, 0.5, 0.97])
def test_the_scorers_figures_from_the_matches_are_cocos_overall_and_per_class(skill: float) -> None:
    """The scorer reads both figures off the matches it bootstraps, instead of running faster-coco-eval too."""
    sheets, predictions = sheets_and_predictions(30, skill, seed=int(skill * 100))
    classes = [*CLASSES, "4"]  # no ground truth: COCO gives it no AP, nor does the scorer
    coco = evaluate(sheets, predictions, classes)
    overall, per_class = model_figures(match(sheets, predictions, classes), len(sheets))
    assert overall == pytest.approx(coco.metrics["mean_average_precision"], abs=1e-6)
    assert per_class == pytest.approx({c: round(v["ap50"], 4) for c, v in coco.per_class.items()}, abs=1e-4)


def test_identical_models_differ_by_exactly_nothing_and_never_promote() -> None:
    sheets, predictions = sheets_and_predictions(25, 0.8, seed=1)
    matches = match(sheets, predictions, CLASSES)
    interval = paired_bootstrap(matches, matches, len(sheets), resamples=500, confidence=0.95)
    assert (interval.difference, interval.low, interval.high) == (0.0, 0.0, 0.0)
    decision = decide_promotion(0.8, 0.8, 0.0, interval)
    assert not decision.promote and "the champion stays" in decision.reason


def test_a_clearly_better_model_has_an_interval_above_zero_and_a_close_one_does_not() -> None:
    sheets, weak = sheets_and_predictions(40, 0.5, seed=2)
    _, strong = sheets_and_predictions(40, 0.95, seed=3)
    _, similar = sheets_and_predictions(40, 0.52, seed=4)
    champion = match(sheets, weak, CLASSES)
    clear = paired_bootstrap(champion, match(sheets, strong, CLASSES), 40, resamples=1000, confidence=0.95)
    close = paired_bootstrap(champion, match(sheets, similar, CLASSES), 40, resamples=1000, confidence=0.95)
    assert clear.low > 0.2 and clear.low <= clear.difference <= clear.high
    assert close.low < 0 < close.high, "a 2-point skill difference on 40 images is not evidence"


def test_the_interval_narrows_with_more_holdout_images() -> None:
    widths = []
    for images in (20, 160):
        sheets, champion = sheets_and_predictions(images, 0.6, seed=5)
        _, challenger = sheets_and_predictions(images, 0.7, seed=6)
        interval = paired_bootstrap(
            match(sheets, champion, CLASSES), match(sheets, challenger, CLASSES), images, resamples=400, confidence=0.9
        )
        widths.append(interval.high - interval.low)
    assert widths[1] < widths[0] * 0.6


def test_the_decision_reads_as_a_sentence() -> None:
    unclear = DifferenceInterval(difference=0.04, low=-0.01, high=0.09, confidence=0.95, resamples=1000)
    decision = decide_promotion(0.84, 0.80, 0.0, unclear)
    assert decision.reason == "+0.040 (95% interval -0.010 to +0.090): not enough evidence, the champion stays"
    clear = DifferenceInterval(difference=0.06, low=0.02, high=0.10, confidence=0.95, resamples=1000)
    assert decide_promotion(0.86, 0.80, 0.0, clear).promote
    assert not decide_promotion(0.86, 0.80, 0.03, clear).promote, "the lower bound must clear the margin"
    worse = DifferenceInterval(difference=-0.06, low=-0.1, high=-0.02, confidence=0.95, resamples=1000)
    assert "the challenger is worse" in decide_promotion(0.74, 0.80, 0.0, worse).reason


def test_without_a_holdout_the_recorded_scores_decide_and_say_so() -> None:
    assert decide_promotion(0.8, None, 0.0).promote
    assert not decide_promotion(0.8, 0.8, 0.0).promote
    decision = decide_promotion(0.81, 0.8, 0.0)
    assert decision.promote and "no holdout" in decision.reason
    assert not decide_promotion(0.81, 0.8, 0.02).promote
