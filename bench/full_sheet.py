"""Benchmark: scoring a full-size 7,000 x 5,000 px sheet, tiled (the product) vs one whole pass (baseline).

Each variant runs in its own process so its peak memory (max RSS) is its own. The detector is the
chosen architecture with fresh weights (time and memory do not depend on what it has learnt).
Target: the tiled pass within 2 GB.

    .venv/bin/python bench/full_sheet.py [--width 7000 --height 5000]
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
import torch
sys.path.insert(0, {root!r})
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
print(json.dumps({{"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tiles": len(engine.tile_starts(height)) * len(engine.tile_starts(width))}}))
"""


def run(width: int, height: int, tiled: bool) -> dict:
    code = _CHILD.format(root=str(ROOT), width=width, height=height, tiled=tiled, threads=os.cpu_count() or 1)
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
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    tiled = run(args.width, args.height, tiled=True)
    print(f"tiled ({tiled.get('tiles')} tiles): {tiled.get('seconds', 0):.1f} s, peak {tiled.get('peak_mb', 0):.0f} MB")
    whole = run(args.width, args.height, tiled=False)
    if "error" in whole:
        print(f"whole sheet in one pass: failed ({whole['error']})")
    else:
        print(f"whole sheet in one pass: {whole['seconds']:.1f} s, peak {whole['peak_mb']:.0f} MB")
        print(
            f"ratio: tiled uses {tiled['peak_mb'] / whole['peak_mb']:.2f}x the memory, "
            f"{tiled['seconds'] / whole['seconds']:.2f}x the time"
        )
    return 0 if tiled.get("peak_mb", 1e9) < 2048 else 1


if __name__ == "__main__":
    sys.exit(main())
