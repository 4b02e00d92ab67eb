"""Benchmark: the trainer's pace on a shared machine, idle and against two busy loops in sessions of their own.

Each measurement is a fresh process training the local detector (`engine.train`, from the shipped
base model, on realistic sheets, no validation) for a fixed time, and gives milliseconds per training
step after the first epoch (which also warms caches). Loaded means two `while :; do :; done` loops,
each started in its own session (setsid), as other users' work would be: Linux gives every session an
equal share of the CPU, so on 2 cores the trainer's fair share is 2/3 of a core and a fair slowdown is
3x (1.5x for a trainer that would use one core).
Idle and loaded run back to back in the same command, for each variant:

- shipped: threads wait passively and follow the free cores (pipeline_steps/cpu_share.py);
- before: the default OpenMP wait (threads spin) and a thread per usable core, as before issue 39;
- passive: threads wait passively, a thread per usable core (the wait policy alone);
- governed: threads spin, but follow the free cores (the thread count alone).

Other sessions' work shows in the "others" column: tasks of other processes runnable at the start.

    python bench/contention.py [--seconds 30] [--repeats 2] [--variants shipped,before] [--sheets 40]
    taskset -c 0 python bench/contention.py   # one core
    python bench/contention.py --demo [--repeats 0]   # also `python -m devtools.demo`, idle and loaded
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devtools.machine import cpu_model

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Each variant's OpenMP wait policy and thread count.
VARIANTS = {
    "shipped": ("passive", "governed"),
    "before": ("spin", "fixed"),
    "passive": ("passive", "fixed"),
    "governed": ("spin", "governed"),
}


@contextmanager
def busy_loops(count: int) -> Iterator[list[int]]:
    """`count` shell busy loops, each the leader of a session of its own (setsid), ended on leaving."""
    loops = [subprocess.Popen(["sh", "-c", "while :; do :; done"], start_new_session=True) for _ in range(count)]
    try:
        time.sleep(1.0)  # let the scheduler see them
        yield [loop.pid for loop in loops]
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def measure(data: Path, seconds: float, variant: str) -> dict:
    """One fresh trainer process; its pace as a JSON line."""
    started = time.monotonic()
    command = [sys.executable, __file__, "--worker", str(data), "--seconds", str(seconds), "--variants", variant]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=PROJECT_ROOT).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["process_seconds"] = time.monotonic() - started
    return result


def worker(data: Path, seconds: float, variant: str) -> None:
    """Train for `seconds` as the variant says and print the pace. Runs in its own process: OpenMP reads its
    wait policy once, when torch loads it."""
    wait, threads = VARIANTS[variant]
    if wait == "spin":  # OpenMP's default: set nothing before torch loads it (pipeline_steps would)
        os.environ.pop("OMP_WAIT_POLICY", None)
        import torch  # noqa: F401
    from pipeline_steps.cpu_share import others_runnable
    from pipeline_steps.detector import engine
    from shared.evaluation.sheets import class_vocabulary, load_sheets

    if threads == "fixed":  # a thread per usable core, whatever else runs (torch's default)

        class AllCores(engine.ThreadGovernor):
            def adjust(self) -> int:
                self.threads = self.threads or self.cores
                return self.threads

        engine.ThreadGovernor = AllCores  # type: ignore[misc]
    sheets = load_sheets(data)
    classes = class_vocabulary(sheets)
    # Short epochs (4 steps of 12 crops on 40 sheets), so the time cap ends a slow variant soon after `seconds`.
    config = engine.TrainingConfig(max_minutes=seconds / 60, epochs=1_000_000, crops_per_sheet=1, seed=0)
    clocks: list[tuple[float, float]] = []  # (wall, CPU of this process) at each epoch's end
    others: list[int] = []

    def on_epoch(row: dict[str, float]) -> None:
        clocks.append((time.monotonic(), time.process_time()))
        others.append(others_runnable() or 0)

    result = engine.train(sheets, [], classes, config, on_epoch=on_epoch)
    # The first epoch also warms caches and the allocator: the pace is the epochs after it (all, with one only).
    settled = result.history[1:] or result.history
    steps = sum(int(row["steps"]) for row in settled)
    (wall_0, cpu_0), (wall_1, cpu_1) = (clocks[0], clocks[-1]) if len(clocks) > 1 else ((0.0, 0.0), clocks[0])
    print(
        json.dumps(
            {
                "variant": variant,
                "ms_per_step": sum(row["ms_per_step"] * row["steps"] for row in settled) / steps,
                "cpu_ms_per_step": (cpu_1 - cpu_0) / steps * 1000 if len(clocks) > 1 else None,
                "cores_obtained": (cpu_1 - cpu_0) / (wall_1 - wall_0) if len(clocks) > 1 else None,
                "steps": steps,
                "threads": [round(row["threads"], 2) for row in result.history],
                "others": statistics.mean(others),
                "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (spin)"),
            }
        )
    )


def run_demo(workdir: Path) -> tuple[float, str]:
    """Minutes `python -m devtools.demo` took, and its summary (epochs per model: whether a time cap cut one)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--workdir", str(workdir)],
        check=True,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    summary = [line for line in done.stdout.splitlines() if "epoch" in line or "promoted" in line or "mAP" in line]
    return (time.monotonic() - started) / 60, "\n".join(f"    {line.strip()}" for line in summary[-8:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="training time of each measurement")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sheets", type=int, default=40)
    parser.add_argument("--variants", default="shipped,before", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--busy-loops", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, help="keep the generated sheets here and reuse them")
    parser.add_argument("--demo", action="store_true", help="also time `python -m devtools.demo`, idle and loaded")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.seconds, args.variants)
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # a stopped bench ends its busy loops
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    from devtools.realistic import REALISTIC_SPEC, sheet_generator
    from devtools.synthetic import write_mltable_set

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {len(os.sched_getaffinity(0))} usable, load "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.busy_loops} busy loops in sessions of their own "
        f"when loaded; {args.seconds:g} s of training per measurement",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as scratch:
        data = (args.data_dir or Path(scratch)) / f"realistic-{args.sheets}"
        if not (data / "annotations.jsonl").is_file():
            write_mltable_set(data, args.sheets, 11, generate=sheet_generator((0, 1, 2), REALISTIC_SPEC))
        rows: dict[tuple[str, str], list[dict]] = {}
        print(
            "  each line: wall ms per training step, CPU ms per step (spinning shows here), cores the trainer got, "
            "torch threads per epoch, other processes' runnable tasks (mean of the epochs' readings)"
        )
        for repeat in range(args.repeats):
            for variant in variants:  # idle and loaded back to back, so other sessions' work changes least between
                for load in ("idle", "loaded"):
                    with busy_loops(args.busy_loops if load == "loaded" else 0):
                        result = measure(data, args.seconds, variant)
                    rows.setdefault((variant, load), []).append(result)
                    print(f"  repeat {repeat + 1} {load:>6} {variant:>8}: {describe(result)}", flush=True)
        if args.repeats:
            print(f"{'variant':>8} {'idle ms':>8} {'loaded ms':>9} {'ratio':>6}   (median of {args.repeats} each)")
        for variant in variants if args.repeats else []:
            idle, loaded = (statistics.median(r["ms_per_step"] for r in rows[(variant, x)]) for x in ("idle", "loaded"))
            print(f"{variant:>8} {idle:8.0f} {loaded:9.0f} {loaded / idle:5.1f}x")
        if args.demo:
            for load in ("idle", "loaded"):
                with busy_loops(args.busy_loops if load == "loaded" else 0):
                    minutes, summary = run_demo(Path(scratch) / f"demo-{load}")
                print(f"the demo, {load}: {minutes:.1f} min (load {os.getloadavg()[0]:.1f})\n{summary}", flush=True)


def describe(result: dict) -> str:
    cpu = f"{result['cpu_ms_per_step']:6.0f}" if result["cpu_ms_per_step"] is not None else "     ?"
    got = f"{result['cores_obtained']:.2f}" if result["cores_obtained"] is not None else "?"
    threads = result["threads"]
    return (
        f"{result['ms_per_step']:6.0f} ms, CPU {cpu} ms, {got} cores, over {result['steps']:3d} steps, "
        f"{min(threads):g}-{max(threads):g} threads, others {result['others']:.1f}"
    )


if __name__ == "__main__":
    main()
