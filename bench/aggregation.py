"""Benchmark: data aggregation of N per-image JSONL files vs `cat` of the same files, same run.

Writes N label files (and N empty image files) to a temporary folder, then times
`python -m pipeline_steps.data_aggregation` against `find | xargs cat` (the physical floor: read
every file once and write one stream), and reads the step's peak memory at N/10 and N files to
show it does not grow with N. Target: <= 2x cat's time, memory flat in N.

    .venv/bin/python bench/aggregation.py [--files 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent


def write_files(root: Path, count: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    images, labels = root / "images", root / "labels"
    for i in tqdm(range(count), desc=f"write {count} label files", unit="file"):
        folder = f"area{i % 100:02d}"
        (labels / folder).mkdir(parents=True, exist_ok=True)
        (images / folder).mkdir(parents=True, exist_ok=True)
        boxes = []
        for _ in range(int(rng.integers(4, 17))):
            x, y = rng.random(2) * 0.9
            boxes.append(
                {
                    "label": str(int(rng.integers(1, 11))),
                    "topX": x,
                    "topY": y,
                    "bottomX": x + 0.03,
                    "bottomY": y + 0.02,
                    "isCrowd": 0,
                }
            )
        record = {
            "image_url": f"{folder}/s{i}.jpg",
            "image_details": {"format": "jpg", "width": 900, "height": 700},
            "label": boxes,
        }
        (labels / folder / f"s{i}.jsonl").write_text(json.dumps(record, separators=(",", ":")) + "\n")
        (images / folder / f"s{i}.jpg").touch()
    return images, labels


def run_child(command: list[str] | str, shell: bool = False) -> tuple[float, int]:
    """Wall time and the child's peak RSS (KiB); each measured command runs in its own process."""
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        f"subprocess.run({command!r}, shell={shell}, check=True, stdout=subprocess.DEVNULL)\n"
        "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT).stdout
    seconds, peak = json.loads(out)
    return seconds, peak


def aggregate_command(images: Path, labels: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline_steps.data_aggregation",
        "--input-image-data-path",
        str(images),
        "--input-label-data-path",
        str(labels),
        "--input-images-string-absolute-path",
        "azureml://datastores/workspaceblobstore/paths/data/images",
        "--output_path",
        str(output),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-agg-") as tmp:
        small_root, big_root = Path(tmp, "small"), Path(tmp, "big")
        small = write_files(small_root, args.files // 10)
        big = write_files(big_root, args.files)
        run_child(f"find {big[1]} -name '*.jsonl' -print0 | xargs -0 cat > /dev/null", shell=True)  # warm cache
        cat_s, _ = run_child(f"find {big[1]} -name '*.jsonl' -print0 | xargs -0 cat > {tmp}/cat.jsonl", shell=True)
        _, small_peak = run_child(aggregate_command(*small, small_root / "out"))
        big_s, big_peak = run_child(aggregate_command(*big, big_root / "out"))
        records = json.loads((big_root / "out" / "aggregation_summary.json").read_text())["records"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"aggregation of {records} files: {big_s:.2f} s ({records / big_s:,.0f} files/s)")
    print(f"cat of the same files:        {cat_s:.2f} s; ratio {big_s / cat_s:.2f}x (target <= 2x)")
    print(
        f"peak RSS at {args.files // 10} files: {small_peak / 1024:.0f} MiB; "
        f"at {args.files}: {big_peak / 1024:.0f} MiB (ratio {big_peak / small_peak:.2f}, flat = 1.0)"
    )


if __name__ == "__main__":
    main()
