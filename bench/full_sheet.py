"""Benchmark: scoring a full-size 7,000 x 5,000 px sheet, tiled (the product) vs one whole pass (baseline).

Each variant runs in its own process so its peak memory (max RSS) is its own. The detector is the
chosen architecture with fresh weights (time and memory do not depend on what it has learnt).
Target: the tiled pass within 2 GB.

With --model and --mltable, a saved MLflow model (the local detector or an AutoML one) scores the
table's sheets through the scoring contract instead, and its mAP on them is reported with the time
and peak memory; bench/train.py --realistic uses this on a 7,000 px sheet after training.

    .venv/bin/python bench/full_sheet.py [--width 7000 --height 5000]
    .venv/bin/python bench/full_sheet.py --model MODEL_FOLDER --mltable MLTABLE_FOLDER [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, resource, sys, time
{peak}
import torch
from pipeline_steps.detector import engine
from pipeline_steps.detector.model import build_detector
torch.set_num_threads({threads})
width, height, tiled = {width}, {height}, {tiled}
if not tiled:
    engine.TILE_PX = max(width, height)
sheet = torch.full((3, height, width), 255, dtype=torch.uint8)
sheet[:, ::97, :] = 0  # pipe-like lines, so the sheet is not blank
model = build_detector(24)
started = time.perf_counter()
prediction = engine.predict(model, sheet, [str(i) for i in range(1, 25)])
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "peak_mb": peak_mb(),
                  "tiles": len(engine.tile_starts(height)) * len(engine.tile_starts(width))}}))
"""

_MODEL_CHILD = """
import json, resource, sys, time
{peak}
from pathlib import Path
import torch
from shared.evaluation.sheets import class_vocabulary, load_sheets
from pipeline_steps.evaluation.metrics import evaluate
from pipeline_steps.evaluation.scoring import predict_sheets
torch.set_num_threads({threads})
sheets = load_sheets(Path({mltable!r}))
started = time.perf_counter()
predictions = predict_sheets(Path({model!r}), sheets)  # the tag step's call: mlflow.models.predict, loading included
seconds = time.perf_counter() - started
metrics = evaluate(sheets, predictions, class_vocabulary(sheets)).metrics
print(json.dumps({{"seconds": seconds, "peak_mb": peak_mb(),
                  "sheets": [[s.width, s.height] for s in sheets], "symbols": sum(len(s.labels) for s in sheets),
                  "map50": metrics["mean_average_precision"], "coco_map": metrics["coco_map"]}}))
"""

# This process's own peak: ru_maxrss survives exec, so a child started by a large parent (training)
# would report the parent's size; /proc's VmHWM belongs to the process's own memory map.
_PEAK = """
def peak_mb():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def run(width: int, height: int, tiled: bool) -> dict:
    return _child(
        _CHILD.format(peak=_PEAK, root=str(ROOT), width=width, height=height, tiled=tiled, threads=os.cpu_count() or 1)
    )


def score_saved_model(model: Path, mltable: Path) -> dict:
    """Time, peak memory and mAP of a saved MLflow model scoring the table's sheets, in a process of its own."""
    threads = os.cpu_count() or 1
    return _child(
        _MODEL_CHILD.format(peak=_PEAK, root=str(ROOT), model=str(model), mltable=str(mltable), threads=threads)
    )


def _child(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        return {
            "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        }
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=7000)
    parser.add_argument("--height", type=int, default=5000)
    parser.add_argument("--model", type=Path, help="a saved MLflow model folder to score --mltable with")
    parser.add_argument("--mltable", type=Path, help="an MLTable folder of sheets (with --model)")
    parser.add_argument("--json", action="store_true", help="with --model: print the result as one JSON line")
    args = parser.parse_args()
    if args.model or args.mltable:
        if not (args.model and args.mltable):
            parser.error("--model and --mltable go together")
        scored = score_saved_model(args.model, args.mltable)
        print(json.dumps(scored) if args.json else describe_scoring(scored))
        return 0 if scored.get("peak_mb", 1e9) < 2048 else 1
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    tiled = run(args.width, args.height, tiled=True)
    print(
        f"tiled ({tiled.get('tiles')} tiles): {tiled.get('seconds', 0):.1f} s, peak {tiled.get('peak_mb', 0):.0f} MB "
        f"(load {os.getloadavg()[0]:.1f})"
    )
    whole = run(args.width, args.height, tiled=False)
    if "error" in whole:
        print(f"whole sheet in one pass: failed ({whole['error']})")
    else:
        print(
            f"whole sheet in one pass: {whole['seconds']:.1f} s, peak {whole['peak_mb']:.0f} MB "
            f"(load {os.getloadavg()[0]:.1f})"
        )
        print(
            f"ratio: tiled uses {tiled['peak_mb'] / whole['peak_mb']:.2f}x the memory, "
            f"{tiled['seconds'] / whole['seconds']:.2f}x the time"
        )
    return 0 if tiled.get("peak_mb", 1e9) < 2048 else 1


def describe_scoring(scored: dict) -> str:
    if "error" in scored:
        return f"full-sheet scoring failed: {scored['error']}"
    sizes = ", ".join(f"{w} x {h}" for w, h in scored["sheets"])
    return (
        f"full-sheet scoring through the MLflow model ({sizes} px, {scored['symbols']} symbols): "
        f"{scored['seconds']:.1f} s, peak {scored['peak_mb']:.0f} MB, mAP@0.5 {scored['map50']:.3f}, "
        f"COCO mAP {scored['coco_map']:.3f} (load {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    sys.exit(main())
