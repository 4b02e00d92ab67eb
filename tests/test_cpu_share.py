"""The trainer on a shared machine: threads that wait without spinning, as many as there are free cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_steps.cpu_share import ThreadGovernor, others_runnable, threads_for, usable_cores

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def openmp_settings(code: str, **env: str) -> str:
    """What the OpenMP runtime torch loads in a fresh process running `code` reports of its settings."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    environment.update(OMP_DISPLAY_ENV="verbose", PYTHONPATH=str(PROJECT_ROOT), **env)
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    return done.stderr


@pytest.mark.slow  # three processes import torch
def test_a_step_process_loads_torch_with_threads_that_sleep_while_they_wait() -> None:
    # OpenMP reads its wait policy once, when torch loads it: a step's first import of pipeline_steps sets it.
    assert "GOMP_SPINCOUNT = '0'" in openmp_settings("import pipeline_steps.train, pipeline_steps.detector.engine")
    # torch alone spins 300,000 rounds at every barrier: what collapsed training on a shared machine.
    assert "GOMP_SPINCOUNT = '300000'" in openmp_settings("import torch")
    # An operator's own choice stands.
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in openmp_settings("import pipeline_steps, torch", OMP_WAIT_POLICY="ACTIVE")


def test_every_local_step_starts_as_a_pipeline_steps_module(tmp_path: Path) -> None:
    """So the package sets the wait policy before the step imports torch, in the detached runner's children too."""
    from retrainer.settings import Settings
    from retrainer.workspace.local_runner import step_commands

    for command in step_commands(tmp_path, Settings()).values():
        assert command[1:3] == ["-m", command[2]] and command[2].startswith("pipeline_steps.")


@pytest.mark.parametrize(
    ("cores", "others", "threads"),
    [
        (2, 0, 2),  # idle: every core
        (2, 1, 1),  # one other task: the core it leaves
        (2, 2, 1),  # two busy loops (issue 39): one thread, never a barrier to wait at
        (2, 7, 1),  # never none
        (1, 0, 1),  # taskset -c 0
        (8, 3, 5),
        (4, 0.5, 4),  # the median of readings 0 and 1
        (4, 1.5, 2),
    ],
)
def test_threads_follow_the_cores_other_work_leaves_free(cores: int, others: float, threads: int) -> None:
    assert threads_for(cores, others) == threads


def test_the_usable_cores_are_the_affinity_within_a_cgroup_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    cpu_max = tmp_path / "cpu.max"
    assert usable_cores(cpu_max) == 4, "no cgroup file"
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == 4
    cpu_max.write_text("150000 100000\n")
    assert usable_cores(cpu_max) == 2
    cpu_max.write_text("20000 100000\n")
    assert usable_cores(cpu_max) == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    cpu_max.write_text("400000 100000\n")
    assert usable_cores(cpu_max) == 1


def test_other_runnable_tasks_are_the_machines_less_this_processes_own(tmp_path: Path) -> None:
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("3.10 2.05 1.00 5/312 98765\n")
    tasks = tmp_path / "task"
    for tid, state in (("10", "R"), ("11", "S"), ("12", "R")):
        (tasks / tid).mkdir(parents=True)
        (tasks / tid / "stat").write_text(f"{tid} (python (x) y) {state} 1 2 3\n")
    assert others_runnable(loadavg, tasks) == 3
    (tasks / "12" / "stat").write_text("12 (python) S 1 2 3\n")
    assert others_runnable(loadavg, tasks) == 4
    loadavg.write_text("0.00 0.00 0.00 1/99 1\n")
    assert others_runnable(loadavg, tasks) == 0
    assert others_runnable(tmp_path / "missing", tasks) is None
    assert others_runnable(Path("/proc/loadavg")) is not None  # the real one, on Linux


def test_the_governor_sets_threads_from_the_median_of_its_latest_readings() -> None:
    readings = iter([0, 0, 2, 2, 2, 2, 2, 0, 0, 0, None])
    set_to: list[int] = []
    governor = ThreadGovernor(set_to.append, cores=2, read_others=lambda: next(readings), window=5)
    chosen = [governor.adjust() for _ in range(11)]
    # One busy moment changes nothing; a lasting one does, and so does its end.
    assert chosen == [2, 2, 2, 1, 1, 1, 1, 1, 1, 2, 2]
    assert set_to == [2, 1, 2], "torch is told only of changes"
    unreadable = ThreadGovernor(set_to.append, cores=3, read_others=lambda: None)
    assert unreadable.adjust() == 3, "where the kernel says nothing: every usable core, as torch would"


def test_the_training_log_says_how_many_threads_each_epoch_ran() -> None:
    import torch

    from pipeline_steps.detector.engine import TrainingResult, describe_epoch
    from pipeline_steps.evaluation.metrics import evaluate

    history = [
        {"epoch": 1, "minutes": 0.1, "loss": 1.0, "steps": 10, "ms_per_step": 125.0, "load": 0.2, "threads": 2.0},
        {"epoch": 2, "minutes": 0.3, "loss": 0.9, "steps": 10, "ms_per_step": 310.0, "load": 2.4, "threads": 1.4},
    ]
    assert describe_epoch(history[1]).endswith("(310 ms per step, torch threads 1.4, machine load 2.4)")
    result = TrainingResult(torch.nn.Linear(1, 1), ["1"], evaluate([], [], ["1"]), [], 2, 2, 5.0, history, 2)
    assert "torch threads 1.4-2, machine load 0.2-2.4" in result.pace()


@pytest.mark.slow
def test_training_and_validation_run_on_the_cores_other_work_leaves(
    training_sets: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from pipeline_steps import cpu_share
    from pipeline_steps.detector.engine import TrainingConfig, train, validate
    from shared.evaluation.sheets import class_vocabulary, load_sheets

    sheets, val = load_sheets(training_sets[0]), load_sheets(training_sets[1])
    classes = class_vocabulary(sheets, val)
    before = torch.get_num_threads()
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    try:
        monkeypatch.setattr(cpu_share, "others_runnable", lambda: 2)  # two busy loops elsewhere
        result = train(sheets, val, classes, TrainingConfig(epochs=1, seed=0))
        assert [row["threads"] for row in result.history] == [1.0] and torch.get_num_threads() == 1
        monkeypatch.setattr(cpu_share, "others_runnable", lambda: 0)  # they ended
        validate(result.model, val[:1], classes)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
