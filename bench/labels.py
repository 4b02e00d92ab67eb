"""Benchmark: safe label conversion vs numpy's unsafe loader, in the same process.

Converts N generated legacy-layout label files (object arrays, a pickle inside each) to AutoML
JSONL lines with `retrainer.ingestion.labels` (restricted unpickler + full validation), and the same files
with the plain unsafe baseline `np.load(allow_pickle=True)` + `json.dumps` (no validation).
Reports files/s for both and the ratio of times. Target: safe <= 1.3x the baseline.

    .venv/bin/python bench/labels.py [--files 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from devtools.synthetic import LABEL_MAP, label_rows_to_npy
from retrainer.ingestion.labels import convert_label_file, record_to_jsonl


def generate_label_files(count: int, seed: int = 0) -> list[tuple[bytes, int, int]]:
    rng = np.random.default_rng(seed)
    files = []
    names = {cid: name.rsplit("/", 1)[-1] for cid, name in LABEL_MAP.items()}
    for _ in tqdm(range(count), desc="generate label files", unit="file"):
        width, height = int(rng.integers(480, 1280)), int(rng.integers(480, 1280))
        rows = []
        for _ in range(int(rng.integers(4, 17))):
            w, h = int(rng.integers(18, 70)), int(rng.integers(18, 44))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            class_id = str(int(rng.integers(1, len(LABEL_MAP) + 1)))
            rows.append((names[class_id], [x, y, x + w, y + h], class_id))
        files.append((label_rows_to_npy(rows), width, height))
    return files


def safe(files: list[tuple[bytes, int, int]]) -> int:
    total = 0
    for index, (data, width, height) in enumerate(files):
        record = convert_label_file(
            data,
            file_name=f"{index}_symbols.npy",
            image_url=f"{index}.jpg",
            width=width,
            height=height,
            image_format="jpg",
            label_map=LABEL_MAP,
        )
        total += len(record_to_jsonl(record))
    return total


def unsafe_baseline(files: list[tuple[bytes, int, int]]) -> int:
    total = 0
    for index, (data, width, height) in enumerate(files):
        rows = np.load(io.BytesIO(data), allow_pickle=True)
        labels = [
            {
                "label": str(r[2]),
                "topX": r[1][0] / width,
                "topY": r[1][1] / height,
                "bottomX": r[1][2] / width,
                "bottomY": r[1][3] / height,
                "isCrowd": 0,
            }
            for r in rows
        ]
        record = {
            "image_url": f"{index}.jpg",
            "image_details": {"format": "jpg", "width": width, "height": height},
            "label": labels,
        }
        total += len(json.dumps(record)) + 1
    return total


def best_time(
    function: Callable[[list[tuple[bytes, int, int]]], int], files: list[tuple[bytes, int, int]], repeats: int
) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(files)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = generate_label_files(args.files)
    safe(files[:100]), unsafe_baseline(files[:100])  # warm-up
    safe_s = best_time(safe, files, args.repeats)
    base_s = best_time(unsafe_baseline, files, args.repeats)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"label files: {args.files}, best of {args.repeats}")
    print(f"safe conversion (restricted unpickler + validation): {safe_s:.2f} s, {args.files / safe_s:,.0f} files/s")
    print(f"unsafe baseline (np.load allow_pickle + json.dumps):  {base_s:.2f} s, {args.files / base_s:,.0f} files/s")
    print(f"ratio safe/baseline time: {safe_s / base_s:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
