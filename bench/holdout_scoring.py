"""Benchmark: what scoring AutoML's tiled Faster R-CNN costs the tag step, on this CPU.

AutoML for Images' default model here is torchvision's Faster R-CNN R50-FPN, fed tiles of the 6x4
grid (about 1,470 x 1,380 px on a 7,000 x 4,500 sheet) resized to min 1,200 / max 1,600 px; its tiled
inference scores every tile and the whole sheet, 25 forwards a sheet. This times one such forward
(fresh weights: time does not depend on what the model learnt), against the same model at
torchvision's default input size (min 800 / max 1,333) on the same tile, measured in the same run,
and projects the tag step's scoring of PROMOTION_MAX_HOLDOUT_IMAGES sheets by two models on this
CPU. The GPU line is an estimate from published figures, printed with its sources.

    .venv/bin/python bench/holdout_scoring.py [--repeats 3] [--sheets 200]
    taskset -c 0 .venv/bin/python bench/holdout_scoring.py   # one core
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from devtools.machine import cpu_model

TILE = (1380, 1470)  # height, width of one 6x4 tile of a 7,000 x 4,500 sheet at 25% overlap
FORWARDS_PER_SHEET = 6 * 4 + 1
#: Detectron2's model zoo (MODEL_ZOO.md, faster_rcnn_R_50_FPN_3x): 0.038 s an image on a V100 at
#: COCO's 800 x 1,333; a T4 (Standard_NC4as_T4_v3) has about half a V100's fp32 throughput (8.1
#: against 15.7 TFLOPS) and a third of its memory bandwidth (320 against 900 GB/s): 2.5x is assumed.
V100_SECONDS_AT_COCO_SIZE = 0.038
T4_OVER_V100 = 2.5


def seconds_per_forward(min_size: int, max_size: int, repeats: int) -> float:
    model = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=25, min_size=min_size, max_size=max_size
    ).eval()
    tile = torch.rand(3, *TILE)
    times = []
    with torch.inference_mode():
        model([tile])  # the first forward allocates; it is not the steady cost
        for _ in range(repeats):
            started = time.perf_counter()
            model([tile])
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sheets", type=int, default=200, help="holdout sheets scored (PROMOTION_MAX_HOLDOUT_IMAGES)")
    parser.add_argument("--budget-minutes", type=float, default=60, help="PROMOTION_SCORING_MINUTES")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    print(f"{cpu_model()}, {cores} core(s), torch {torch.__version__}; tile {TILE[1]} x {TILE[0]} px")
    automl = seconds_per_forward(1200, 1600, args.repeats)
    baseline = seconds_per_forward(800, 1333, args.repeats)
    print(f"one forward at AutoML's input (min 1,200 / max 1,600): {automl:.2f} s")
    print(f"baseline, torchvision's default input (min 800 / max 1,333): {baseline:.2f} s ({automl / baseline:.2f}x)")
    per_sheet = automl * FORWARDS_PER_SHEET
    total = per_sheet * args.sheets * 2
    fits = int(args.budget_minutes * 60 / (per_sheet * 2))
    print(
        f"this CPU: {per_sheet:.0f} s a sheet a model ({FORWARDS_PER_SHEET} forwards); {args.sheets} sheets x 2 models "
        f"{total / 3600:.1f} h; a {args.budget_minutes:g}-minute budget scores {fits} sheets"
    )
    pixels = (1200 * 1600) / (800 * 1333)
    gpu = V100_SECONDS_AT_COCO_SIZE * pixels * T4_OVER_V100 * FORWARDS_PER_SHEET
    print(
        f"estimate, T4 GPU: {gpu:.1f} s a sheet a model, {args.sheets} x 2 in {gpu * args.sheets * 2 / 60:.0f} min "
        f"(Detectron2 model zoo: {V100_SECONDS_AT_COCO_SIZE} s an image on a V100 at 800 x 1,333; x{pixels:.2f} "
        f"for the pixels; x{T4_OVER_V100} for a T4)"
    )


if __name__ == "__main__":
    main()
