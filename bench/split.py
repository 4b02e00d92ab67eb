"""Benchmark: the data split step's stratification vs scikit-learn's StratifiedGroupKFold, same data, same run.

N images with 1-10 boxes each of C long-tailed classes (Zipf-like). Both methods make k=5 folds and
take fold 0 as validation, grouped by image. Figure of merit: class-share deviation, the mean over
classes of |class's share of its boxes in val - val's share of all boxes| (0 is perfect).
Target: in <= 2 s (the non-sticky step reached 0.77x the reference's deviation; the sticky one
trades box-share balance for never moving an image). The step's split is image-level
(sticky sides: it only ever places new images), so it is also measured adding 10% more images.

    .venv/bin/python bench/split.py [--images 20000] [--classes 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from pipeline_steps.split_sides import SplitConfig, split_records
from shared.contracts import SplitAssignment, SplitSide


def long_tailed_records(images: int, classes: int, tail: float, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, classes + 1) ** tail
    weights /= weights.sum()
    records = []
    for i in range(images):
        labels = rng.choice(classes, size=int(rng.integers(1, 11)), p=weights) + 1
        boxes = [{"label": str(c), "topX": 0.1, "topY": 0.1, "bottomX": 0.2, "bottomY": 0.2} for c in labels]
        records.append({"image_url": f"img_{i}.jpg", "label": boxes})
    return records


def box_counts(records: list[dict], val: set[int]) -> tuple[Counter, Counter]:
    """Boxes per class in the whole set and in the validation set."""
    all_boxes: Counter[str] = Counter()
    val_boxes: Counter[str] = Counter()
    for i, record in enumerate(records):
        labels = [box["label"] for box in record["label"]]
        all_boxes.update(labels)
        if i in val:
            val_boxes.update(labels)
    return all_boxes, val_boxes


def deviation(records: list[dict], val: set[int]) -> float:
    all_boxes, val_boxes = box_counts(records, val)
    val_share = sum(val_boxes.values()) / sum(all_boxes.values())
    return float(np.mean([abs(val_boxes[c] / all_boxes[c] - val_share) for c in all_boxes]))


def integer_floor(records: list[dict], val: set[int]) -> float:
    """The deviation left when every class holds the nearest whole number of boxes to its ideal val count."""
    all_boxes, val_boxes = box_counts(records, val)
    share = sum(val_boxes.values()) / sum(all_boxes.values())
    return float(np.mean([abs(round(share * n) - share * n) / n for n in all_boxes.values()]))


def reference_split(records: list[dict], k: int, seed: int) -> set[int]:
    """The reference pipeline's method: StratifiedGroupKFold over box rows, grouped by image."""
    y, groups = [], []
    for i, record in enumerate(records):
        for box in record["label"]:
            y.append(int(box["label"]))
            groups.append(i)
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    _, val_rows = next(iter(folds.split(np.zeros(len(y)), y, groups)))
    return {groups[row] for row in val_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--tail", type=float, default=1.1, help="Zipf exponent of class frequencies")
    args = parser.parse_args()
    records = long_tailed_records(args.images, args.classes, args.tail)
    started = time.perf_counter()
    config = SplitConfig(n_fold=5, holdout_fraction=0.0, holdout_min_images_per_class=0)
    result = split_records(records, SplitAssignment(), config)
    ours_s = time.perf_counter() - started
    ours_val = result.sides[SplitSide.VAL]
    started = time.perf_counter()
    reference_val = reference_split(records, 5, 42)
    reference_s = time.perf_counter() - started
    ours_dev, reference_dev = deviation(records, set(ours_val)), deviation(records, reference_val)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"{args.images} images, {args.classes} long-tailed classes, {sum(len(r['label']) for r in records)} boxes, k=5"
    )
    print(f"iterative stratification (the step): {ours_s:.2f} s, deviation {ours_dev:.5f}, val {len(ours_val)} images")
    print(
        f"StratifiedGroupKFold on box rows:    {reference_s:.2f} s, deviation {reference_dev:.5f}, "
        f"val {len(reference_val)} images"
    )
    print(f"whole-box floor for this val share: deviation {integer_floor(records, set(ours_val)):.5f}")
    more = long_tailed_records(args.images + args.images // 10, args.classes, args.tail)
    started = time.perf_counter()
    grown = split_records(more, result.assignment, config)
    print(
        f"10% more images on top of the stored assignment: {time.perf_counter() - started:.2f} s, "
        f"{grown.newly_assigned} newly assigned, deviation {deviation(more, set(grown.sides[SplitSide.VAL])):.5f}"
    )
    print(f"deviation ratio step/reference: {ours_dev / reference_dev:.2f}x; time target <= 2 s")


if __name__ == "__main__":
    main()
