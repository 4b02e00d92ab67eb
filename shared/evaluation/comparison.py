"""Two models' detections on the same holdout images: mAP@0.5 of each, and a paired bootstrap of the difference.

COCO's protocol at IoU 0.5 (per image and class, detections by falling score each take the unmatched
ground-truth box they overlap most, at IoU >= 0.5; per class, precision is made monotone and read at
101 recall points; classes without ground truth are left out of the mean). The matches do not depend
on which images a resample draws, so they are computed once; a resample only weighs each image by
how often it was drawn, which COCO tools cannot do. At weight 1 the figure equals faster-coco-eval's
AP50 (a test checks it), so the bootstrap resamples exactly the number the decision reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from shared.evaluation.sheets import Prediction, Sheet
from shared.promotion import DifferenceInterval

_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_IOU = 0.5


@dataclass(frozen=True)
class ClassMatches:
    """One class over all images: each detection's image, and whether it matched; ground truth per image."""

    image: np.ndarray  # (D,) image index of each detection, in falling score order
    true_positive: np.ndarray  # (D,) bool
    ground_truth: np.ndarray  # (I,) boxes of the class in each image


def match(sheets: list[Sheet], predictions: list[Prediction], classes: list[str]) -> dict[str, ClassMatches]:
    """COCO matching at IoU 0.5, per class, over every image."""
    per_class: dict[str, ClassMatches] = {}
    for c in classes:
        images, scores, hits = [], [], []
        ground_truth = np.zeros(len(sheets), dtype=np.float64)
        for index, (sheet, prediction) in enumerate(zip(sheets, predictions, strict=True)):
            truth = sheet.boxes[np.array([label == c for label in sheet.labels], dtype=bool)]
            mask = np.array([label == c for label in prediction.labels], dtype=bool)
            boxes, box_scores = prediction.boxes[mask], prediction.scores[mask]
            ground_truth[index] = len(truth)
            order = np.argsort(-box_scores, kind="mergesort")
            hits.append(_greedy_hits(boxes[order], truth))
            scores.append(box_scores[order])
            images.append(np.full(len(order), index))
        all_scores = np.concatenate(scores) if scores else np.zeros(0)
        order = np.argsort(-all_scores, kind="mergesort")
        per_class[c] = ClassMatches(
            np.concatenate(images)[order].astype(np.int64) if images else np.zeros(0, dtype=np.int64),
            np.concatenate(hits)[order] if hits else np.zeros(0, dtype=bool),
            ground_truth,
        )
    return per_class


def _greedy_hits(detections: np.ndarray, truth: np.ndarray) -> np.ndarray:
    hits = np.zeros(len(detections), dtype=bool)
    if len(detections) == 0 or len(truth) == 0:
        return hits
    iou = _iou(detections, truth)
    taken = np.zeros(len(truth), dtype=bool)
    for d in range(len(detections)):
        candidates = np.where(taken, -1.0, iou[d])
        best = int(np.argmax(candidates))
        if candidates[best] >= _IOU:
            taken[best] = True
            hits[d] = True
    return hits


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_map50(matches: dict[str, ClassMatches], weights: np.ndarray) -> np.ndarray:
    """mAP@0.5 for each row of image weights (R, I): the mean over classes with ground truth in that resample."""
    weights = np.atleast_2d(weights).astype(np.float64)
    total = np.zeros(len(weights))
    counted = np.zeros(len(weights))
    for m in matches.values():
        positives = weights @ m.ground_truth
        ap = _weighted_ap(m, weights, positives)
        has_truth = positives > 0
        total += np.where(has_truth, ap, 0.0)
        counted += has_truth
    return np.where(counted > 0, total / np.maximum(counted, 1), 0.0)


def _weighted_ap(m: ClassMatches, weights: np.ndarray, positives: np.ndarray) -> np.ndarray:
    if len(m.image) == 0:
        return np.zeros(len(weights))
    w = weights[:, m.image]  # (R, D)
    tp = np.cumsum(w * m.true_positive, axis=1)
    fp = np.cumsum(w * ~m.true_positive, axis=1)
    recall = tp / np.maximum(positives, 1e-12)[:, None]
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 0.0)
    precision = np.flip(np.maximum.accumulate(np.flip(precision, axis=1), axis=1), axis=1)
    ap = np.zeros(len(weights))
    for r in range(len(weights)):
        at = np.searchsorted(recall[r], _RECALL_POINTS, side="left")
        valid = at < recall.shape[1]
        ap[r] = precision[r, at[valid]].sum() / len(_RECALL_POINTS)
    return ap


def resample_weights(images: int, resamples: int, seed: int, batch: int = 100) -> Iterator[np.ndarray]:
    """Bootstrap draws of the images as weights (how often each image was drawn), `batch` rows at a time."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, batch):
        count = min(batch, resamples - start)
        weights = np.zeros((count, images))
        np.add.at(weights, (np.arange(count)[:, None], rng.integers(0, images, size=(count, images))), 1.0)
        yield weights


def paired_bootstrap(
    champion: dict[str, ClassMatches],
    challenger: dict[str, ClassMatches],
    images: int,
    *,
    resamples: int,
    confidence: float,
    seed: int = 0,
) -> DifferenceInterval:
    """Challenger minus champion mAP@0.5 on the same images, with a percentile bootstrap interval: images are
    resampled with replacement, the same draw for both models."""
    if images == 0:
        raise ValueError("a comparison needs at least one holdout image")
    ones = np.ones((1, images))
    difference = float(weighted_map50(challenger, ones)[0] - weighted_map50(champion, ones)[0])
    differences = np.concatenate(
        [weighted_map50(challenger, w) - weighted_map50(champion, w) for w in resample_weights(images, resamples, seed)]
    )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    return DifferenceInterval(
        difference=difference, low=float(low), high=float(high), confidence=confidence, resamples=resamples
    )


def per_class_bootstrap(
    champion: dict[str, ClassMatches],
    challenger: dict[str, ClassMatches],
    images: int,
    *,
    resamples: int,
    confidence: float,
    seed: int = 0,
) -> dict[str, DifferenceInterval]:
    """Each class's AP@0.5, challenger minus champion, with a percentile interval over the same image draws."""
    if images == 0:
        raise ValueError("a comparison needs at least one holdout image")
    weights = np.vstack([np.ones((1, images)), *resample_weights(images, resamples, seed)])  # row 0: every image once
    tail = (1.0 - confidence) / 2.0
    intervals = {}
    for name in challenger.keys() & champion.keys():
        positives = weights @ challenger[name].ground_truth
        difference = _weighted_ap(challenger[name], weights, positives) - _weighted_ap(
            champion[name], weights, positives
        )
        low, high = np.quantile(difference[1:], [tail, 1.0 - tail])
        intervals[name] = DifferenceInterval(
            difference=float(difference[0]),
            low=float(low),
            high=float(high),
            confidence=confidence,
            resamples=resamples,
        )
    return intervals


def class_ap50(matches: dict[str, ClassMatches]) -> dict[str, float]:
    """Each class's AP@0.5 on all images (weight 1), the figure the per-class intervals are centred on."""
    ones = np.ones((1, len(next(iter(matches.values())).ground_truth))) if matches else np.ones((1, 0))
    return {name: float(_weighted_ap(m, ones, ones @ m.ground_truth)[0]) for name, m in matches.items()}
