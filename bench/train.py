"""Benchmark: local detector quality after a fixed CPU budget, the chosen setup vs a rejected one.

Generates ~200 training sheets (10 classes, look-alike valves and instruments that differ by one
stroke, sheets of 480-1280 px) and a held-out set from another seed, trains each setup for the
same budget on this machine, and prints mAP@0.5 and COCO mAP@[.5:.95] on the held-out set, with
the curve (held-out mAP vs minutes). Targets: >= 0.95 and >= 0.75 within 5 minutes on 2 cores.

    .venv/bin/python bench/train.py [--minutes 5] [--train-sheets 200] [--val-sheets 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
from pathlib import Path

import torch

from pipeline_steps.detector.data import class_vocabulary, load_sheets
from pipeline_steps.detector.engine import TrainingConfig, train
from retrainer.synthetic import write_mltable_set

SETUPS = {
    "chosen: FCOS, 192 px crops at native scale, batch 12": TrainingConfig(),
    "rejected: FCOS, 320 px crops at native scale, batch 4": TrainingConfig(crop=320, batch_size=4, crops_per_sheet=2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--train-sheets", type=int, default=200)
    parser.add_argument("--val-sheets", type=int, default=40)
    parser.add_argument("--only-chosen", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        train_sheets = load_sheets(write_mltable_set(Path(tmp, "train"), args.train_sheets, seed=101))
        val_sheets = load_sheets(write_mltable_set(Path(tmp, "val"), args.val_sheets, seed=202))
        classes = class_vocabulary(train_sheets, val_sheets)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, Python {platform.python_version()}")  # fmt: skip
        print(f"{len(train_sheets)} training sheets, {len(val_sheets)} held-out sheets, {len(classes)} classes, "
              f"{sum(len(s.labels) for s in train_sheets)} training symbols; budget {args.minutes:g} min")  # fmt: skip
        for name, config in list(SETUPS.items())[: 1 if args.only_chosen else None]:
            config = dataclasses.replace(config, max_minutes=args.minutes, evaluation_sheets=len(val_sheets))
            result = train(train_sheets, val_sheets, classes, config)
            curve = ", ".join(
                f"{row['minutes']:.1f} min: {row['val_mean_average_precision']:.3f}"
                for row in result.history
                if "val_mean_average_precision" in row
            )
            metrics = result.evaluation.metrics
            print(f"\n{name}\n  held-out mAP@0.5 {metrics['mean_average_precision']:.3f}, "
                  f"COCO mAP@[.5:.95] {metrics['coco_map']:.3f}, precision {metrics['precision']:.3f}, "
                  f"recall {metrics['recall']:.3f} after {result.seconds / 60:.1f} min ({result.epochs} epochs, "
                  f"best {result.best_epoch})\n  curve (held-out mAP@0.5): {curve}")  # fmt: skip


if __name__ == "__main__":
    main()
