"""Detection metrics from faster-coco-eval (COCO protocol), never computed by hand.

`mean_average_precision` is mAP at IoU 0.5, AutoML for Images' default primary metric;
`coco_map` is COCO mAP@[.5:.95]; `precision` and `recall` are macro averages at the score
threshold with the best macro F1 (faster-coco-eval's extended metrics).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from shared.evaluation.sheets import Prediction as Prediction  # defined beside Sheet, numpy only
from shared.evaluation.sheets import Sheet


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    pr_curve: dict[str, list[float]]  # recall thresholds and mean precision at IoU 0.5


def evaluate(sheets: list[Sheet], predictions: list[Prediction], classes: list[str]) -> Evaluation:
    """COCO evaluation of predictions (one per sheet, same order) against the sheets' boxes."""
    category = {c: i + 1 for i, c in enumerate(classes)}
    ground_truth = COCO()
    ground_truth.dataset = _ground_truth(sheets, category)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    detections = [
        {"image_id": index + 1, "category_id": category[label], "bbox": _xywh(box), "score": float(score)}
        for index, prediction in enumerate(predictions)
        for box, score, label in zip(prediction.boxes, prediction.scores, prediction.labels, strict=True)
        if label in category
    ]
    if not detections or not ground_truth.dataset["annotations"]:
        return _empty(classes)
    with contextlib.redirect_stdout(io.StringIO()):
        result = ground_truth.loadRes(detections)
        evaluator = COCOeval_faster(ground_truth, result, iouType="bbox", extra_calc=True)
        evaluator.params.maxDets = [1, 10, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    extended = evaluator.extended_metrics
    per_class = {
        row["class"]: {
            "ap50": _number(row["map@50"]),
            "ap50_95": _number(row["map@50:95"]),
            "precision": _number(row["precision"]),
            "recall": _number(row["recall"]),
        }
        for row in extended["class_map"]
        if row["class"] != "all"
    }
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all recalls, classes, all areas, max dets
    curve = [float(np.mean(row[row > -1])) if (row > -1).any() else 0.0 for row in precision]
    return Evaluation(
        metrics={
            "mean_average_precision": _number(evaluator.stats[1]),
            "coco_map": _number(evaluator.stats[0]),
            "precision": _number(extended["precision"]),
            "recall": _number(extended["recall"]),
        },
        per_class=per_class,
        pr_curve={"recall": [float(r) for r in evaluator.params.recThrs], "precision": curve},
    )


def _ground_truth(sheets: list[Sheet], category: dict[str, int]) -> dict:
    annotations: list[dict] = []
    for index, sheet in enumerate(sheets):
        for box, label in zip(sheet.boxes, sheet.labels, strict=True):
            x, y, w, h = _xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category[label],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {
        "images": [
            {"id": i + 1, "width": s.width, "height": s.height, "file_name": s.path.name} for i, s in enumerate(sheets)
        ],
        "annotations": annotations,
        "categories": [{"id": i, "name": c} for c, i in category.items()],
    }


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _number(value: float | np.floating) -> float:
    number = float(value)
    return 0.0 if not np.isfinite(number) or number < 0 else number


def _empty(classes: list[str]) -> Evaluation:
    zero = {"ap50": 0.0, "ap50_95": 0.0, "precision": 0.0, "recall": 0.0}
    return Evaluation(
        metrics={"mean_average_precision": 0.0, "coco_map": 0.0, "precision": 0.0, "recall": 0.0},
        per_class={c: dict(zero) for c in classes},
        pr_curve={"recall": [], "precision": []},
    )


def _iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1 y1 x2 y2 boxes."""
    if len(boxes) == 0 or len(others) == 0:
        return np.zeros((len(boxes), len(others)), dtype=np.float32)
    top_left = np.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)[:, None] + (others[:, 2:] - others[:, :2]).prod(axis=1)[None]
    return overlap / np.maximum(areas - overlap, 1e-9)


@dataclass(frozen=True)
class Mistake:
    sheet_index: int
    box: np.ndarray
    label: str
    score: float  # the prediction's score; 0 for a missed symbol


@dataclass(frozen=True)
class Confusion:
    """Rows: the true class (last row: background, i.e. false detections); columns: the predicted class
    (last column: background, i.e. missed symbols). Detections at or above the score threshold only."""

    classes: list[str]
    matrix: np.ndarray
    false_positives: list[Mistake]  # highest score first
    false_negatives: list[Mistake]


def confusion(
    sheets: list[Sheet], predictions: list[Prediction], classes: list[str], score_threshold: float, iou: float = 0.5
) -> Confusion:
    """Match detections to symbols class-agnostically (highest score first, IoU >= `iou`), so a look-alike
    taken for another class shows as an off-diagonal cell instead of a miss plus a false detection."""
    index = {c: i for i, c in enumerate(classes)}
    background = len(classes)
    matrix = np.zeros((len(classes) + 1, len(classes) + 1), dtype=np.int64)
    false_positives, false_negatives = [], []
    for sheet_index, (sheet, prediction) in enumerate(zip(sheets, predictions, strict=True)):
        keep = prediction.scores >= score_threshold
        boxes, scores = prediction.boxes[keep], prediction.scores[keep]
        labels = [label for label, kept in zip(prediction.labels, keep, strict=True) if kept]
        order = np.argsort(-scores)
        overlaps = _iou(boxes, np.asarray(sheet.boxes, dtype=np.float32).reshape(-1, 4))
        taken: set[int] = set()
        for detection in order:
            candidates = [g for g in np.argsort(-overlaps[detection]) if g not in taken] if overlaps.size else []
            match = next((g for g in candidates if overlaps[detection, g] >= iou), None)
            predicted = index.get(labels[detection], background)
            if match is None:
                matrix[background, predicted] += 1
                false_positives.append(
                    Mistake(sheet_index, boxes[detection], labels[detection], float(scores[detection]))
                )
            else:
                taken.add(int(match))
                matrix[index.get(sheet.labels[match], background), predicted] += 1
        for truth, (box, label) in enumerate(zip(sheet.boxes, sheet.labels, strict=True)):
            if truth not in taken:
                matrix[index.get(label, background), background] += 1
                false_negatives.append(Mistake(sheet_index, np.asarray(box, dtype=np.float32), label, 0.0))
    false_positives.sort(key=lambda mistake: -mistake.score)
    return Confusion(list(classes), matrix, false_positives, false_negatives)
