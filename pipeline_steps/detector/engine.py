"""Training for a number of epochs, capped by a CPU time budget, with progress, periodic validation and the best
checkpoint; from scratch or from the champion's weights.

The work is set in epochs, so a model means the same on a fast or a slow machine: the time budget is
only a cap, and when it cuts training short the result says so (`budget_cut`). The learning rate
anneals by whichever is further along, the epochs or the budget, so a cut run still ends annealed.
The budget counts training time only: validation, bounded by `evaluations` x `evaluation_sheets`, is
measured and reported beside it (on a slow CPU a 2,000 px sheet takes seconds to score, and four
validations would otherwise eat most of a 5-minute budget).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline_steps.cpu_share import ThreadGovernor
from pipeline_steps.detector.data import CropSampler, read_image
from pipeline_steps.detector.model import build_detector
from pipeline_steps.detector.warm_start import BaseStart, WarmStart, WarmStartUnavailable, base_start, warm_start
from pipeline_steps.evaluation.metrics import Evaluation, Prediction, evaluate
from shared.evaluation.sheets import Sheet


@dataclass(frozen=True)
class TrainingConfig:
    max_minutes: float = 5.0  # a cap: training stops early when it is reached, and says so
    epochs: int = 60  # the work, from scratch; with the same seed and no cut, training repeats exactly
    warm_epochs: int = 20  # the work when starting from the champion's weights
    warm_start_from: Path | None = None  # the champion's MLflow model folder (the local detector's)
    warm_learning_rate: float = 1e-3  # fine-tuning: no warm-up, a third of the from-scratch rate
    base_start: bool = True  # with no champion given, start from the base model (class rows fresh), not from noise
    base_learning_rate: float = 3e-3  # from the base model: no warm-up
    seed: int = 0
    crop: int = 192  # small crops around symbols: most of a sheet is blank paper, which teaches little
    batch_size: int = 12
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    crops_per_sheet: int = 4  # crops drawn from each training sheet per epoch
    evaluations: int = 4  # how many times validation runs within the budget (and once more at the end)
    evaluation_sheets: int = 16  # validation sheets scored during training; all of them at the end
    bfloat16: bool = True  # forward passes in bfloat16 where the CPU computes it natively (weights stay float32)


@dataclass
class TrainingResult:
    model: torch.nn.Module
    classes: list[str]
    evaluation: Evaluation
    predictions: list[Prediction]  # of the validation sheets, by the returned model
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    planned_epochs: int = 0
    budget_cut: bool = False  # the time budget stopped training before the planned epochs
    training_seconds: float = 0.0  # what the budget counts: `seconds` less validation
    warm_start: WarmStart | None = None
    warm_start_skipped: str | None = None  # why a champion was given but not used
    base: BaseStart | None = None  # started from the base model (no champion seeded the model)
    base_skipped: str | None = None  # why the base model was not used

    def notes(self) -> list[str]:
        """What a reader of the log and the report should know about how this model was trained."""
        lines = []
        if self.warm_start is not None:
            lines.append(self.warm_start.describe())
        elif self.base is not None:
            lines.append(self.base.describe())
        else:
            reasons = [reason for reason in (self.warm_start_skipped, self.base_skipped) if reason]
            lines.append("trained from scratch" + (": " + "; ".join(reasons) if reasons else ""))
        if self.budget_cut:
            lines.append(
                f"the time budget cut training short: {self.epochs} of {self.planned_epochs} planned epochs "
                f"in {self.training_seconds / 60:.1f} min of training (raise LOCAL_TRAINING_MINUTES, or expect a "
                "weaker model)"
            )
        else:
            lines.append(
                f"{self.epochs} of {self.planned_epochs} planned epochs in {self.training_seconds / 60:.1f} min "
                "of training"
            )
        lines.append(f"validation took {(self.seconds - self.training_seconds) / 60:.1f} min besides")
        lines.append(self.pace())
        return lines

    def pace(self) -> str:
        """Milliseconds per training step and the machine's load: what a figure from a busy machine shows."""
        steps = sum(int(row.get("steps", 0)) for row in self.history)
        loads = [row["load"] for row in self.history if "load" in row]
        if not steps:
            return "no training step was taken"
        cores = len(os.sched_getaffinity(0))
        threads = [row["threads"] for row in self.history if "threads" in row] or [float(torch.get_num_threads())]
        pace = (
            f"pace: {self.training_seconds / steps * 1000:.0f} ms per step over {steps} steps, "
            f"torch threads {_span(threads, '{:.3g}')}, machine load {_span(loads, '{:.1f}')} on {cores} usable cores"
        )
        # The load average counts the whole machine, so it is held against the machine's cores: a run pinned
        # to one core (taskset) while another core works is not slowed by that work.
        if max(loads) > (os.cpu_count() or cores):
            # Measured on 2 cores at load 4: 2 threads took 3.1 s a step, 1 thread 0.43 s (bench/step_profile.py).
            pace += " (other work shared the CPU: steps were slower than this CPU's own pace)"
        return pace


def _span(values: list[float], form: str) -> str:
    low, high = form.format(min(values)), form.format(max(values))
    return low if low == high else f"{low}-{high}"


def describe_epoch(row: dict[str, float]) -> str:
    """One epoch's line of the training log: time, loss, held-out score when it was measured, and the pace."""
    score = f", held-out mAP@0.5 {row['val_mean_average_precision']:.3f}" if "val_mean_average_precision" in row else ""
    threads = f", torch threads {row['threads']:.3g}" if "threads" in row else ""
    return (
        f"epoch {int(row['epoch'])}: {row['minutes']:.1f} min of training, loss {row['loss']:.3f}{score} "
        f"({row['ms_per_step']:.0f} ms per step{threads}, machine load {row['load']:.1f})"
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


#: Sheets larger than this on a side are scored in overlapping tiles: a whole 7,000 x 5,000 px sheet
#: would need several GB for the backbone's first feature maps.
TILE_PX = 1536
#: More than the largest symbol (about 100 px), so every symbol lies whole inside some tile.
TILE_OVERLAP_PX = 192


def tile_starts(length: int, tile: int = TILE_PX, overlap: int = TILE_OVERLAP_PX) -> list[int]:
    """Tile origins along one side: tiles of `tile` px overlapping by at least `overlap`, the last flush."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


@torch.no_grad()
def predict(model: torch.nn.Module, image: torch.Tensor, classes: list[str]) -> Prediction:
    """Boxes, scores and class ids for one image tensor (3, H, W) in [0, 1] (or uint8).

    A sheet larger than TILE_PX is scored tile by tile; each tile keeps the detections whose centre
    lies in its own share of the overlap, so a symbol on a seam is reported once. Overlaps are
    suppressed per class only (torchvision's default): suppressing across classes was measured to cut
    recall on look-alike symbols (held-out recall 0.87 -> 0.59 in bench/train.py).
    """
    model.eval()
    _, height, width = image.shape
    boxes, scores, labels = [], [], []
    ys, xs = tile_starts(height), tile_starts(width)
    for row, y0 in enumerate(ys):
        for column, x0 in enumerate(xs):
            tile = image[:, y0 : y0 + TILE_PX, x0 : x0 + TILE_PX]
            tile = tile.float().div(255.0) if tile.dtype == torch.uint8 else tile
            output = model([tile])[0]
            shifted = output["boxes"] + torch.tensor([x0, y0, x0, y0], dtype=output["boxes"].dtype)
            keep = _owned(shifted, xs, ys, column, row) & _has_area(shifted)
            boxes.append(shifted[keep])
            scores.append(output["scores"][keep])
            labels.append(output["labels"][keep])
    all_boxes, all_scores, all_labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    names = tuple(classes[int(i) - 1] for i in all_labels)
    return Prediction(all_boxes.numpy(), all_scores.numpy(), names)


def _has_area(boxes: torch.Tensor, min_side: float = 1.0) -> torch.Tensor:
    """FCOS clips boxes to the image but keeps those clipped to nothing, e.g. ones predicted on the
    padding beyond the right edge, which would reach the contract as topX == bottomX == 1."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_side) & ((boxes[:, 3] - boxes[:, 1]) >= min_side)


def _owned(boxes: torch.Tensor, xs: list[int], ys: list[int], column: int, row: int) -> torch.Tensor:
    """Detections whose centre falls in this tile's share: seams split overlaps in the middle."""
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2

    def bounds(starts: list[int], index: int) -> tuple[float, float]:
        low = -math.inf if index == 0 else (starts[index - 1] + TILE_PX + starts[index]) / 2
        high = math.inf if index == len(starts) - 1 else (starts[index] + TILE_PX + starts[index + 1]) / 2
        return low, high

    low_x, high_x = bounds(xs, column)
    low_y, high_y = bounds(ys, row)
    return (centre_x >= low_x) & (centre_x < high_x) & (centre_y >= low_y) & (centre_y < high_y)


def validate(
    model: torch.nn.Module, sheets: list[Sheet], classes: list[str], governor: ThreadGovernor | None = None
) -> tuple[Evaluation, list[Prediction]]:
    """The model's predictions of the sheets and their evaluation; threads follow the free cores sheet by sheet."""
    governor = governor or ThreadGovernor(torch.set_num_threads)
    predictions = []
    for sheet in sheets:
        governor.adjust()
        predictions.append(predict(model, read_image(sheet.path), classes))
    return evaluate(sheets, predictions, classes), predictions


def train(
    train_sheets: list[Sheet],
    val_sheets: list[Sheet],
    classes: list[str],
    config: TrainingConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    build_model: Callable[[int], torch.nn.Module] = build_detector,
) -> TrainingResult:
    """Train for the planned epochs (or until the budget); the weights of the best validation epoch are returned.

    `build_model` (number of classes -> detector) lets bench/train.py measure rejected alternatives.
    """
    seed_everything(config.seed)
    started = time.monotonic()
    budget = config.max_minutes * 60
    model = build_model(len(classes))
    seeded, skipped, based, base_skipped = None, None, None, None
    if config.warm_start_from is not None:
        try:
            seeded = warm_start(model, config.warm_start_from, classes)
        except WarmStartUnavailable as reason:
            skipped = str(reason)
    # A first model (no champion given) starts from the base model; a champion that was given but refused
    # means noise, as before: the refusal is news the log must carry, not something the base would hide.
    if config.warm_start_from is None and config.base_start:
        try:
            based = base_start(model)
        except WarmStartUnavailable as reason:
            base_skipped = str(reason)
    planned = config.warm_epochs if seeded else config.epochs
    base_rate = config.warm_learning_rate if seeded else config.base_learning_rate if based else config.learning_rate
    sampler = CropSampler(train_sheets, classes, config.crop, config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=base_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_sheets) * config.crops_per_sheet / config.batch_size))
    rng = np.random.default_rng(config.seed)
    mixed_precision = config.bfloat16 and native_bfloat16()
    best_state, best_score, best_epoch = copy.deepcopy(model.state_dict()), -1.0, 0
    history: list[dict[str, float]] = []
    epoch, budget_cut, evaluated, trained = 0, False, 0, 0.0  # trained: seconds of training, not validation
    # On a shared machine threads wait for each other at every barrier: as many as there are free cores.
    governor = ThreadGovernor(torch.set_num_threads)
    while True:
        epoch += 1
        epoch_started = time.monotonic()
        progress = max((epoch - 1) / planned, trained / budget)
        lr = _cosine(base_rate, progress, warm_up=epoch == 1 and seeded is None and based is None)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses, threads = [], []
        model.train()
        order = rng.permutation(np.repeat(np.arange(len(train_sheets)), config.crops_per_sheet))
        with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", unit="batch", leave=False) as bar:
            for step in range(steps_per_epoch):
                threads.append(governor.adjust())
                batch = [
                    sampler.sample(train_sheets[i]) for i in order[step * config.batch_size :][: config.batch_size]
                ]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision):
                    loss_parts = model([image for image, _ in batch], [target for _, target in batch])
                loss = sum(loss_parts.values())
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                optimizer.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses):.3f}")
                bar.update(1)
        epoch_seconds = time.monotonic() - epoch_started
        trained += epoch_seconds
        budget_cut = epoch < planned and trained + epoch_seconds > budget
        done = epoch >= planned or budget_cut
        row = {
            "epoch": epoch,
            "minutes": trained / 60,
            "loss": float(np.mean(losses)),
            "lr": lr,
            "steps": steps_per_epoch,
            "ms_per_step": epoch_seconds / steps_per_epoch * 1000,
            "threads": float(np.mean(threads)),
            "load": os.getloadavg()[0],  # other work on the machine: a slow epoch says why
        }
        if val_sheets and (done or evaluation_due(epoch, planned, config.evaluations, trained / budget, evaluated)):
            evaluated += 1
            metrics = validate(model, val_sheets[: config.evaluation_sheets], classes, governor)[0].metrics
            row.update({f"val_{k}": v for k, v in metrics.items()})
            if metrics["mean_average_precision"] > best_score:
                best_state = copy.deepcopy(model.state_dict())
                best_score, best_epoch = metrics["mean_average_precision"], epoch
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if done:
            break
    if not val_sheets:
        best_state, best_epoch = model.state_dict(), epoch
    model.load_state_dict(best_state)
    evaluation, predictions = (
        validate(model, val_sheets, classes, governor) if val_sheets else (evaluate([], [], classes), [])
    )
    return TrainingResult(
        model,
        classes,
        evaluation,
        predictions,
        best_epoch,
        epoch,
        time.monotonic() - started,
        history,
        planned_epochs=planned,
        budget_cut=budget_cut,
        training_seconds=trained,
        warm_start=seeded,
        warm_start_skipped=skipped,
        base=based,
        base_skipped=base_skipped,
    )


def evaluation_due(epoch: int, planned: int, evaluations: int, budget_used: float, evaluated: int) -> bool:
    """Validate every planned/evaluations epochs, or each time the run passes another 1/evaluations of its
    time budget: when the budget, not the epochs, bounds a run, its curve is still drawn."""
    by_epochs = epoch % max(1, planned // evaluations) == 0
    return by_epochs or budget_used >= (evaluated + 1) / evaluations


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX).

    There, a training step takes 0.66x the time (bench/train.py); elsewhere bfloat16 is emulated
    and slower than float32.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def _cosine(base: float, progress: float, warm_up: bool) -> float:
    """Cosine decay over the run's progress (0 to 1), after one warm-up epoch when training from scratch."""
    if warm_up:
        return base * 0.3
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
