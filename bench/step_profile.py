"""Benchmark: where a training step's time goes, and which levers pay, on this machine.

One step of the local trainer is split into crop sampling, the forward pass with the loss, the
backward pass and the optimiser, each timed over the same batches, for every combination of the
levers: bfloat16 autocast (where the CPU has it natively) vs float32, channels-last memory format,
and the number of threads. The baseline is float32, contiguous, all cores, measured in the same run.
Validation is timed with and without `torch.inference_mode`.

    .venv/bin/python bench/step_profile.py [--steps 30] [--sheets 60]
    taskset -c 0 .venv/bin/python bench/step_profile.py   # one core
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from devtools.machine import cpu_model
from devtools.synthetic import write_mltable_set
from pipeline_steps.detector.data import CropSampler, read_image
from pipeline_steps.detector.engine import TrainingConfig, native_bfloat16, predict
from pipeline_steps.detector.model import build_detector
from shared.evaluation.sheets import class_vocabulary, load_sheets


def profile(sheets: list, classes: list[str], steps: int, *, bfloat16: bool, channels_last: bool) -> dict[str, float]:
    config = TrainingConfig()
    torch.manual_seed(0)
    model = build_detector(len(classes))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    sampler = CropSampler(sheets, classes, config.crop, seed=0)
    rng = np.random.default_rng(0)
    parts: dict[str, list[float]] = {"sampling": [], "forward+loss": [], "backward": [], "optimiser": []}
    model.train()
    for step in range(steps + 3):
        started = time.perf_counter()
        batch = [sampler.sample(sheets[int(i)]) for i in rng.integers(len(sheets), size=config.batch_size)]
        images = [image for image, _ in batch]  # torchvision batches them; channels-last applies to the weights
        sampled = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            loss = sum(model(images, [target for _, target in batch]).values())
        forward = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        done = time.perf_counter()
        if step >= 3:  # the first steps warm caches and the allocator
            spans = (sampled - started, forward - sampled, backward - forward, done - backward)
            for name, seconds in zip(parts, spans, strict=True):
                parts[name].append(seconds * 1000)
    result = {name: statistics.median(values) for name, values in parts.items()}
    result["step"] = sum(result.values())
    result["load"] = os.getloadavg()[0]  # other work on the machine while this row was measured
    return result


def validation_seconds(sheets: list, classes: list[str], inference_mode: bool) -> float:
    model = build_detector(len(classes)).eval()
    images = [read_image(sheet.path) for sheet in sheets[:8]]
    started = time.perf_counter()
    context = torch.inference_mode() if inference_mode else torch.no_grad()
    with context:
        for image in images:
            predict(model, image, classes)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sheets", type=int, default=60)
    parser.add_argument("--realistic", action="store_true", help="realistic 1,400-2,400 px sheets, 24 classes")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(
        f"machine: {cpu_model()}, {cores} usable cores, torch {torch.__version__}, bfloat16 native: "
        f"{native_bfloat16()}, load {os.getloadavg()[0]:.1f} (the load column: other work while each row ran)"
    )
    with tempfile.TemporaryDirectory() as scratch:
        if args.realistic:
            from devtools.realistic import REALISTIC_SPEC, sheet_generator

            generate = sheet_generator((0, 1, 2), REALISTIC_SPEC)
            folder = write_mltable_set(Path(scratch) / "set", args.sheets, 11, generate=generate)
        else:
            folder = write_mltable_set(Path(scratch) / "set", args.sheets, seed=11)
        sheets = load_sheets(folder)
        classes = class_vocabulary(sheets)
        rows = []
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            for bfloat16 in (False, True) if native_bfloat16() else (False,):
                for channels_last in (False, True):
                    timing = profile(sheets, classes, args.steps, bfloat16=bfloat16, channels_last=channels_last)
                    rows.append((threads, bfloat16, channels_last, timing))
        baseline = next(t for threads, bf, cl, t in rows if threads == cores and not bf and not cl)["step"]
        print(
            f"{'threads':>7} {'dtype':>8} {'layout':>13} {'sampling':>9} {'fwd+loss':>9} {'backward':>9} "
            f"{'optimiser':>9} {'step ms':>8} {'vs fp32':>8} {'load':>5}"
        )
        for threads, bfloat16, channels_last, timing in rows:
            print(
                f"{threads:>7} {'bfloat16' if bfloat16 else 'float32':>8} "
                f"{'channels-last' if channels_last else 'contiguous':>13} {timing['sampling']:>9.1f} "
                f"{timing['forward+loss']:>9.1f} {timing['backward']:>9.1f} {timing['optimiser']:>9.1f} "
                f"{timing['step']:>8.1f} {timing['step'] / baseline:>7.2f}x {timing['load']:>5.1f}"
            )
        torch.set_num_threads(cores)
        plain, inference = (validation_seconds(sheets, classes, mode) for mode in (False, True))
        ratio = inference / plain
        print(
            f"validation of 8 sheets: no_grad {plain:.2f} s, inference_mode {inference:.2f} s ({ratio:.2f}x), "
            f"load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
