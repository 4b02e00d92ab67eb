"""Benchmark: what the tag step computes on the holdout once both models have scored it.

N synthetic sheets with 20-80 symbols of C classes, two detectors (one finds 80% of the symbols, the
other 90%, each with false alarms). The scorer matches each model's detections once and reads from
those matches its mAP@0.5 and per-class AP@0.5, the paired bootstrap and the class guard. The baseline,
measured in the same run, is that plus faster-coco-eval's evaluation of each model, which the scorer
ran for the two figures until the matches gave them.

    .venv/bin/python bench/holdout_figures.py [--sheets 200] [--classes 25] [--resamples 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from devtools.machine import cpu_model
from pipeline_steps.evaluation.metrics import evaluate
from pipeline_steps.holdout_scorer import class_guard, model_figures
from shared.evaluation.comparison import match, paired_bootstrap
from shared.evaluation.sheets import Prediction, Sheet, class_vocabulary


def sheets_and_detectors(
    sheets: int, classes: int, skills: tuple[float, ...]
) -> tuple[list[Sheet], list[list[Prediction]]]:
    rng = np.random.default_rng(0)
    truth: list[Sheet] = []
    detections: list[list[Prediction]] = [[] for _ in skills]
    for i in range(sheets):
        count = int(rng.integers(20, 81))
        corners = rng.uniform(0, 6900, size=(count, 2))
        boxes = np.hstack([corners, corners + rng.uniform(40, 100, size=(count, 2))]).astype(np.float32)
        labels = tuple(str(int(c)) for c in rng.integers(1, classes + 1, size=count))
        truth.append(Sheet(Path(f"/bench/{i}.png"), 7000, 5000, boxes, labels))
        for model, skill in enumerate(skills):
            found = rng.random(count) < skill
            false = rng.uniform(0, 6900, size=(count // 10, 2))
            predicted = np.vstack(
                [boxes[found] + rng.normal(0, 4, size=(int(found.sum()), 4)), np.hstack([false, false + 60])]
            )
            scores = np.concatenate([rng.uniform(0.3, 1.0, int(found.sum())), rng.uniform(0.05, 0.6, len(false))])
            kinds = (*(c for c, hit in zip(labels, found, strict=True) if hit), *(labels[: len(false)]))
            detections[model].append(Prediction(predicted.astype(np.float32), scores.astype(np.float32), kinds))
    return truth, detections


def figures(sheets: list[Sheet], predictions: list[list[Prediction]], resamples: int, with_coco: bool) -> float:
    started = time.perf_counter()
    classes = class_vocabulary(sheets)
    if with_coco:
        for p in predictions:
            evaluate(sheets, p, classes)
    matches = [match(sheets, p, classes) for p in predictions]
    for m in matches:
        model_figures(m, len(sheets))
    paired_bootstrap(matches[1], matches[0], len(sheets), resamples=resamples, confidence=0.95)
    class_guard(
        matches[0],
        matches[1],
        len(sheets),
        resamples=resamples,
        confidence=0.95,
        min_instances=20,
        max_drop=0.1,
        names={},
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sheets", type=int, default=200, help="PROMOTION_MAX_HOLDOUT_IMAGES")
    parser.add_argument("--classes", type=int, default=25)
    parser.add_argument("--resamples", type=int, default=1000, help="PROMOTION_BOOTSTRAP_RESAMPLES")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sheets, predictions = sheets_and_detectors(args.sheets, args.classes, (0.8, 0.9))
    boxes = sum(len(s.labels) for s in sheets)
    print(
        f"{cpu_model()}, {len(os.sched_getaffinity(0))} core(s); {args.sheets} sheets, {boxes} symbols, "
        f"{args.classes} classes, {args.resamples} resamples; median of {args.repeats}"
    )
    scorer = statistics.median(figures(sheets, predictions, args.resamples, False) for _ in range(args.repeats))
    baseline = statistics.median(figures(sheets, predictions, args.resamples, True) for _ in range(args.repeats))
    print(f"the scorer's figures from the matches: {scorer:.2f} s")
    print(f"baseline, with faster-coco-eval for each model too: {baseline:.2f} s ({baseline / scorer:.2f}x)")


if __name__ == "__main__":
    main()
