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

from pipeline_steps.detector.data import Sheet


@dataclass(frozen=True)
class Prediction:
    boxes: np.ndarray  # (N, 4) pixels x1 y1 x2 y2
    scores: np.ndarray  # (N,)
    labels: tuple[str, ...]  # class ids


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
