"""Build the base model that ships with the detector (`pipeline_steps/detector/base/`), the start of every first model.

    python -m devtools.base_model [--epochs 100] [--sheets 400] [--val-sheets 30] [--seed 0] \
        [--min-side 1400] [--max-side 2400]

Trains the chosen detector from scratch on realistic sheets of styles 0-2 with seeds of its own (9001 for
training, 9002 and 9003 to measure), never the benchmark's (bench/train.py: 101, 202, 303, ...), never
style 3, and writes its record (the command, seed, data, epochs, steps, figures, pace, machine) beside the
weights (`base/base.json`). On 2 cores the defaults take about 35 minutes; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from devtools.machine import cpu_model
from devtools.realistic import REALISTIC_SPEC, sheet_generator
from devtools.synthetic import write_mltable_set
from pipeline_steps.detector.engine import TrainingConfig, describe_epoch, native_bfloat16, train, validate
from pipeline_steps.detector.warm_start import BASE_FOLDER, save_base
from shared.evaluation.sheets import class_vocabulary, load_sheets

#: The base model's data seeds: its training sheets and the two held-out sets it is measured on.
TRAIN_SEED, SEEN_STYLE_SEED, UNSEEN_STYLE_SEED = 9001, 9002, 9003


def machine() -> str:
    """The CPU, its usable cores and threads, torch, and the load: what a training figure is read against."""
    return (
        f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} usable cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"
    )


def print_epoch(row: dict[str, float]) -> None:
    print(f"  {describe_epoch(row)}", flush=True)


def command(args: argparse.Namespace) -> str:
    """The command that rebuilds this base, as its record states it."""
    return (
        f"python -m devtools.base_model --epochs {args.epochs} --sheets {args.sheets} --val-sheets {args.val_sheets} "
        f"--seed {args.seed} --min-side {args.min_side} --max-side {args.max_side}"
    )


def build(args: argparse.Namespace, folder: Path = BASE_FOLDER) -> dict:
    """Train the base model from scratch and write it, with its record, to `folder`; the record."""
    spec = dataclasses.replace(REALISTIC_SPEC, min_side=args.min_side, max_side=args.max_side)
    seen, unseen_style = sheet_generator((0, 1, 2), spec), sheet_generator((3,), spec)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="base-model-") as tmp:
        train_sheets = load_sheets(write_mltable_set(Path(tmp, "train"), args.sheets, TRAIN_SEED, generate=seen))
        seen_val = load_sheets(write_mltable_set(Path(tmp, "seen"), args.val_sheets, SEEN_STYLE_SEED, generate=seen))
        unseen_val = load_sheets(
            write_mltable_set(Path(tmp, "unseen"), args.val_sheets, UNSEEN_STYLE_SEED, generate=unseen_style)
        )
        classes = class_vocabulary(train_sheets, seen_val, unseen_val)
        print(f"{machine()}; base model: {len(train_sheets)} sheets, {args.epochs} epochs", flush=True)
        config = dataclasses.replace(
            TrainingConfig(),
            max_minutes=math.inf,
            epochs=args.epochs,
            evaluation_sheets=min(16, len(seen_val)),
            evaluations=3,
            seed=args.seed,
            base_start=False,
        )
        result = train(train_sheets, seen_val, classes, config, on_epoch=print_epoch)
        unseen, _ = validate(result.model, unseen_val, classes)
    figures = {
        "seen_style_map50": round(result.evaluation.metrics["mean_average_precision"], 3),
        "unseen_style_map50": round(unseen.metrics["mean_average_precision"], 3),
    }
    steps = sum(int(row["steps"]) for row in result.history)
    record = {
        "summary": (
            f"{result.epochs} epochs, {steps} steps on {len(train_sheets)} realistic sheets of styles 0-2 (seed "
            f"{TRAIN_SEED}); held-out seen styles {figures['seen_style_map50']:.3f}, unseen style "
            f"{figures['unseen_style_map50']:.3f}"
        ),
        "command": command(args),
        "training_seed": args.seed,
        "data": {
            "generator": "devtools.realistic, styles 0-2 (style 3 never seen: the benchmark's unseen style)",
            "train": {
                "seed": TRAIN_SEED,
                "sheets": len(train_sheets),
                "symbols": sum(len(s.labels) for s in train_sheets),
            },
            "seen_style_holdout": {"seed": SEEN_STYLE_SEED, "sheets": len(seen_val)},
            "unseen_style_holdout": {"seed": UNSEEN_STYLE_SEED, "sheets": len(unseen_val)},
            "sides_px": [args.min_side, args.max_side],
            "classes": classes,
        },
        "epochs": result.epochs,
        "steps": steps,
        "figures": figures,
        "pace": result.pace(),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "machine": machine(),
        "bfloat16": native_bfloat16(),
        "class_rows": "left out: every class of a deployment starts fresh",
    }
    save_base(result.model, record, folder)
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100, help="epochs from scratch")
    parser.add_argument("--sheets", type=int, default=400, help="training sheets")
    parser.add_argument("--val-sheets", type=int, default=30, help="sheets of each held-out set")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data sets keep theirs)")
    parser.add_argument("--min-side", type=int, default=1400, help="smallest sheet side, px")
    parser.add_argument("--max-side", type=int, default=2400, help="largest sheet side, px")
    parser.add_argument("--output", type=Path, default=BASE_FOLDER, help="where to write it (default: the shipped one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    record = build(args, args.output)
    print(json.dumps(record, indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
