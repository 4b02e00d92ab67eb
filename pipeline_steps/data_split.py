"""Step 2, data split: one aggregated MLTable -> train and validation MLTables, stratified by class.

    python -m pipeline_steps.data_split --input_data_path <MLTable folder> --use_stratified_split true \
        --stratified_split_n_fold 5 --mandatory_train_filenames "a.jpg;b.jpg" --mandatory_val_filenames "" \
        --train_output_path <folder> --val_output_path <folder>

Multi-label stratification grouped by image (iterative stratification over each image's set of
classes; chosen over scikit-learn's StratifiedGroupKFold on box rows by `bench/split.py`): no image
is in both sets, except images of rare classes (fewer images than folds), which follow
`--rare_class_policy`: `copy` (default, as the reference pipeline did) puts them in both sets,
`train_only` keeps them in train. Mandatory lists are `;`-separated basenames. Every class keeps at
least one training image. With `--use_stratified_split false` everything is training data and the
validation MLTable is empty but valid. `split_report.json` (in the train folder) gives per-class
image and box counts in both sets.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pipeline_steps._cli import add_flag, boolean, filename_list
from pipeline_steps.mltable_io import class_sort_key, count_classes, read_records, write_records

REPORT_FILE = "split_report.json"
RARE_CLASS_POLICIES = ("copy", "train_only")


class SplitError(ValueError):
    """The split cannot be made as asked (the message says why and which setting to change)."""


@dataclass(frozen=True)
class SplitConfig:
    use_stratified_split: bool = True
    n_fold: int = 5
    fold: int = 0
    seed: int = 42
    mandatory_train: tuple[str, ...] = ()
    mandatory_val: tuple[str, ...] = ()
    rare_class_policy: str = "copy"


@dataclass
class SplitResult:
    train: list[int]
    val: list[int]
    notes: dict[str, object] = field(default_factory=dict)


def image_classes(record: dict) -> set[str]:
    return {box["label"] for box in record.get("label", [])}


def basename(record: dict) -> str:
    return PurePosixPath(record["image_url"]).name


def split_records(records: list[dict], config: SplitConfig) -> SplitResult:
    """Indices of the training and validation records (pure; deterministic for a seed)."""
    if not config.use_stratified_split:
        return SplitResult(list(range(len(records))), [], {"stratified": False})
    _check_config(config)
    names = [basename(record) for record in records]
    forced_train = {i for i, name in enumerate(names) if name in set(config.mandatory_train)}
    forced_val = {i for i, name in enumerate(names) if name in set(config.mandatory_val)}
    found = set(names)
    not_found = sorted(set(config.mandatory_train + config.mandatory_val) - found)

    classes_of = [image_classes(record) for record in records]
    images_per_class = Counter(c for classes in classes_of for c in classes)
    rare = {c for c, n in images_per_class.items() if n < config.n_fold}
    rare_images = {i for i, classes in enumerate(classes_of) if classes & rare} - forced_train - forced_val
    pool = [i for i in range(len(records)) if i not in forced_train | forced_val | rare_images]
    if len(pool) < config.n_fold:
        raise SplitError(
            f"{len(pool)} images left to stratify cannot make {config.n_fold} folds: "
            "lower STRATIFIED_SPLIT_N_FOLD or set USE_STRATIFIED_SPLIT=false"
        )
    val_from_pool = _stratified_fold(pool, records, config)
    val = sorted(set(val_from_pool) | forced_val)
    train = sorted(set(range(len(records))) - set(val))
    if config.rare_class_policy == "copy":
        val = sorted(set(val) | rare_images)
    moved = _give_every_class_a_training_image(train, val, classes_of, forced_val)
    return SplitResult(
        train,
        val,
        {
            "stratified": True,
            "algorithm": "iterative stratification of image class sets (iterstrat), then box-share refinement by swaps",
            "n_fold": config.n_fold,
            "validation_fold": config.fold,
            "seed": config.seed,
            "rare_classes": sorted(rare, key=class_sort_key),
            "rare_class_policy": config.rare_class_policy,
            "rare_class_images": len(rare_images),
            "mandatory_not_found": not_found,
            "moved_to_train_so_every_class_trains": [names[i] for i in moved],
        },
    )


def _check_config(config: SplitConfig) -> None:
    if config.n_fold < 2:
        raise SplitError(f"STRATIFIED_SPLIT_N_FOLD must be at least 2, got {config.n_fold}")
    if not 0 <= config.fold < config.n_fold:
        raise SplitError(f"validation fold {config.fold} is not in 0..{config.n_fold - 1}")
    if config.rare_class_policy not in RARE_CLASS_POLICIES:
        raise SplitError(f"rare class policy must be one of {RARE_CLASS_POLICIES}, got {config.rare_class_policy!r}")
    both = sorted(set(config.mandatory_train) & set(config.mandatory_val))
    if both:
        raise SplitError(f"in both MANDATORY_TRAIN_FILENAMES and MANDATORY_VAL_FILENAMES: {', '.join(both)}")


def _stratified_fold(pool: list[int], records: list[dict], config: SplitConfig) -> list[int]:
    """Records of the validation fold: iterative stratification of image class sets, then box-share refinement."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    box_counts = _box_count_matrix([records[i] for i in pool])
    folds = MultilabelStratifiedKFold(n_splits=config.n_fold, shuffle=True, random_state=config.seed)
    for fold, (_, val_rows) in enumerate(folds.split(np.zeros(len(pool)), box_counts > 0)):
        if fold == config.fold:
            in_val = np.zeros(len(pool), dtype=bool)
            in_val[val_rows] = True
            refine_box_shares(box_counts, in_val, np.random.default_rng(config.seed))
            return [pool[row] for row in np.flatnonzero(in_val)]
    raise AssertionError("unreachable: fold index was checked")


def _box_count_matrix(records: list[dict]) -> np.ndarray:
    """Boxes of each class per image (rows: records, columns: classes in numeric order)."""
    classes = sorted({box["label"] for r in records for box in r.get("label", [])}, key=class_sort_key)
    column = {c: j for j, c in enumerate(classes)}
    counts = np.zeros((len(records), max(len(classes), 1)), dtype=np.float64)
    for row, record in enumerate(records):
        for box in record.get("label", []):
            counts[row, column[box["label"]]] += 1
    return counts


def box_share_deviation(box_counts: np.ndarray, in_val: np.ndarray) -> float:
    """Mean over classes of |class's share of boxes in val - val's share of all boxes|."""
    totals = box_counts.sum(axis=0)
    present = totals > 0
    val = box_counts[in_val].sum(axis=0)
    return float(np.abs(val[present] / totals[present] - val.sum() / totals.sum()).mean())


def refine_box_shares(
    box_counts: np.ndarray, in_val: np.ndarray, rng: np.random.Generator, rounds: int = 400, batch: int = 2048
) -> None:
    """Swap images between the sets, keeping their sizes, while it lowers the box-share deviation.

    Image-level stratification balances which images carry a class, not how many boxes; each round
    scores `batch` random (val, train) swaps at once and applies the best one that helps.
    """
    totals = box_counts.sum(axis=0)
    present = totals > 0
    weights = 1.0 / totals[present]
    counts = box_counts[:, present]
    val = counts[in_val].sum(axis=0)
    grand_total = totals.sum()
    box_totals = counts.sum(axis=1)

    def deviation(val_counts: np.ndarray) -> np.ndarray:
        share = val_counts.sum(axis=-1, keepdims=True) / grand_total
        return np.abs(val_counts * weights - share).mean(axis=-1)

    current = float(deviation(val))
    for _ in range(rounds):
        val_rows, train_rows = np.flatnonzero(in_val), np.flatnonzero(~in_val)
        if len(val_rows) == 0 or len(train_rows) == 0:
            return
        out_rows, in_rows = _swap_candidates(
            counts, val_rows, train_rows, val * weights - val.sum() / grand_total, rng, batch
        )
        candidates = val + counts[in_rows] - counts[out_rows]
        scores = deviation(candidates)
        best = int(np.argmin(scores))
        if scores[best] >= current or (box_totals[in_rows[best]] == 0 and box_totals[out_rows[best]] == 0):
            continue
        in_val[out_rows[best]], in_val[in_rows[best]] = False, True
        val = candidates[best]
        current = float(scores[best])


def _swap_candidates(
    counts: np.ndarray,
    val_rows: np.ndarray,
    train_rows: np.ndarray,
    error: np.ndarray,
    rng: np.random.Generator,
    batch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Half random swaps, half aimed: a val image of the most over-represented class for a train image of the most
    under-represented one."""
    half = batch // 2
    out_rows = val_rows[rng.integers(len(val_rows), size=batch)]
    in_rows = train_rows[rng.integers(len(train_rows), size=batch)]
    over, under = int(np.argmax(error)), int(np.argmin(error))
    over_rows = val_rows[counts[val_rows, over] > 0]
    under_rows = train_rows[counts[train_rows, under] > 0]
    if len(over_rows):
        out_rows[:half] = over_rows[rng.integers(len(over_rows), size=half)]
    if len(under_rows):
        in_rows[:half] = under_rows[rng.integers(len(under_rows), size=half)]
    return out_rows, in_rows


def _give_every_class_a_training_image(
    train: list[int], val: list[int], classes_of: list[set[str]], forced_val: set[int]
) -> list[int]:
    """Move the smallest number of validation images so that each class has a training image."""
    trained = {c for i in train for c in classes_of[i]}
    missing = {c for i in val for c in classes_of[i]} - trained
    moved = []
    for c in sorted(missing, key=class_sort_key):
        if c in trained:
            continue
        candidates = [i for i in val if c in classes_of[i] and i not in forced_val]
        if not candidates:
            raise SplitError(
                f"class {c} appears only in MANDATORY_VAL_FILENAMES images: it would have no training image"
            )
        chosen = candidates[0]
        val.remove(chosen)
        train.append(chosen)
        train.sort()
        trained |= classes_of[chosen]
        moved.append(chosen)
    return moved


def split_report(records: list[dict], result: SplitResult) -> dict[str, Any]:
    train = count_classes(records[i] for i in result.train)
    val = count_classes(records[i] for i in result.val)
    classes = sorted(set(train.images_per_class) | set(val.images_per_class), key=class_sort_key)
    per_class = {
        c: {
            "train_images": train.images_per_class[c],
            "val_images": val.images_per_class[c],
            "train_boxes": train.boxes_per_class[c],
            "val_boxes": val.boxes_per_class[c],
        }
        for c in classes
    }
    shared = sorted(set(result.train) & set(result.val))
    return {
        **result.notes,
        "train": {"images": train.images, "boxes": train.boxes},
        "val": {"images": val.images, "boxes": val.boxes},
        "images_in_both": [basename(records[i]) for i in shared],
        "per_class": per_class,
    }


def run_split(input_path: Path, train_output: Path, val_output: Path, config: SplitConfig) -> dict[str, Any]:
    records = list(read_records(input_path))
    if not records:
        raise SplitError(f"{input_path} holds no records")
    result = split_records(records, config)
    write_records(train_output, (records[i] for i in result.train))
    write_records(val_output, (records[i] for i in result.val))
    report = split_report(records, result)
    (train_output / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_steps.data_split",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flag(parser, "input_data_path", required=True, type=Path, help="aggregated MLTable folder")
    add_flag(parser, "use_stratified_split", env="USE_STRATIFIED_SPLIT", type=boolean, default=True)
    add_flag(parser, "stratified_split_n_fold", env="STRATIFIED_SPLIT_N_FOLD", type=int, default=5)
    add_flag(parser, "mandatory_train_filenames", env="MANDATORY_TRAIN_FILENAMES", type=filename_list, default=[])
    add_flag(parser, "mandatory_val_filenames", env="MANDATORY_VAL_FILENAMES", type=filename_list, default=[])
    add_flag(parser, "rare_class_policy", choices=RARE_CLASS_POLICIES, default="copy")
    add_flag(parser, "validation_fold", type=int, default=0, help="which of the k folds is validation")
    add_flag(parser, "seed", type=int, default=42)
    add_flag(parser, "train_output_path", required=True, type=Path)
    add_flag(parser, "val_output_path", required=True, type=Path)
    args = parser.parse_args(argv)
    config = SplitConfig(
        use_stratified_split=args.use_stratified_split,
        n_fold=int(args.stratified_split_n_fold),
        fold=args.validation_fold,
        seed=args.seed,
        mandatory_train=tuple(args.mandatory_train_filenames),
        mandatory_val=tuple(args.mandatory_val_filenames),
        rare_class_policy=args.rare_class_policy,
    )
    try:
        report = run_split(args.input_data_path, args.train_output_path, args.val_output_path, config)
    except SplitError as error:
        print(f"data split failed: {error}", file=sys.stderr)
        return 1
    print(
        f"train: {report['train']['images']} images, {report['train']['boxes']} boxes; "
        f"val: {report['val']['images']} images, {report['val']['boxes']} boxes; "
        f"in both (rare classes): {len(report['images_in_both'])}"
    )
    if report.get("mandatory_not_found"):
        print(f"mandatory file names not found: {', '.join(report['mandatory_not_found'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
