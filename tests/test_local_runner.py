"""The local runner: the six steps as processes, from data in Azurite to a tagged model; truthful status."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from devtools.synthetic import SheetSpec, write_dataset_zip
from retrainer import cli
from retrainer.ingestion import loader as data_loader
from retrainer.workspace.local import LocalModelRegistry, LocalPipelineRunner

SMALL = SheetSpec(min_side=256, max_side=320, min_symbols=3, max_symbols=5)

pytestmark = pytest.mark.slow  # runs the real steps as processes


@pytest.fixture
def local_run_env(service_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalPipelineRunner:
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(tmp_path / "workspace"))
    monkeypatch.setenv("STRATIFIED_SPLIT_N_FOLD", "3")
    monkeypatch.setenv("LOCAL_TRAINING_MINUTES", "0.05")
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TRAIN_DATASET", "VAL_DATASET"):
        monkeypatch.delenv(variable, raising=False)
    return LocalPipelineRunner(tmp_path / "workspace")


def load_images(tmp_path: Path, count: int = 24) -> None:
    zip_path = write_dataset_zip(tmp_path / "set.zip", count=count, seed=4, spec=SMALL)
    assert data_loader.main(["--raw-blob-sas-url", str(zip_path), "--raw-input-path", str(tmp_path / "raw")]) == 0


def wait_until_finished(workspace: LocalPipelineRunner, run_id: str, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = workspace.run_status(run_id)
        if status.finished:
            return status.state
        time.sleep(0.5)
    raise AssertionError(f"{run_id} still {workspace.run_status(run_id)} after {timeout} s")


def test_local_run_goes_from_azurite_data_to_a_tagged_model(
    local_run_env: LocalPipelineRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_images(tmp_path)
    started = time.monotonic()
    run_id = local_run_env.submit_pipeline("test")
    assert time.monotonic() - started < 2.0, "submit returns at once"
    assert local_run_env.run_status(run_id).state in ("queued", "running")
    assert wait_until_finished(local_run_env, run_id) == "completed", local_run_env.run_status(run_id).error
    status = local_run_env.run_status(run_id)
    assert status.decision is not None
    assert status.decision.best_version == "1" and status.decision.promoted
    assert "aggregated 24 records" in local_run_env.run_log(run_id, "data_aggregation")
    registry = LocalModelRegistry(local_run_env.root)
    assert [v.version for v in registry.model_versions("pid-symbol-detector") if v.is_best] == ["1"]
    capsys.readouterr()
    assert cli.main(["status", run_id]) == 0
    assert "completed" in capsys.readouterr().out
    assert cli.main(["models"]) == 0
    assert "yes" in capsys.readouterr().out
    assert cli.main(["runs", "--json"]) == 0
    assert run_id in capsys.readouterr().out


def test_a_run_with_no_data_fails_with_its_reason(local_run_env: LocalPipelineRunner) -> None:
    run_id = local_run_env.submit_pipeline("empty")
    assert wait_until_finished(local_run_env, run_id, timeout=60) == "failed"
    assert "holds no images" in local_run_env.run_status(run_id).error


def test_a_killed_runner_reads_as_failed_not_running(local_run_env: LocalPipelineRunner, tmp_path: Path) -> None:
    load_images(tmp_path, count=12)
    run_id = local_run_env.submit_pipeline("killed")
    pid = int((local_run_env.root / "runs" / run_id / "runner.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not local_run_env.run_status(run_id).finished and time.monotonic() < deadline:
        time.sleep(0.1)
    status = local_run_env.run_status(run_id)
    assert status.state == "failed" and "ended without finishing" in status.error


def living_members(group: int) -> list[int]:
    """The processes of a process group that are still running (zombies awaiting their reaper are not)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended while we looked
        if fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(stat.parent.name))
    return members


def test_cancel_stops_a_running_run_and_leaves_no_process_of_it(
    local_run_env: LocalPipelineRunner, tmp_path: Path
) -> None:
    load_images(tmp_path, count=12)
    run_id = local_run_env.submit_pipeline("to cancel")
    group = int((local_run_env.root / "runs" / run_id / "runner.pid").read_text())  # it leads its own group
    deadline = time.monotonic() + 30
    while local_run_env.run_status(run_id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert living_members(group), "the runner and its step are running before the cancel"
    local_run_env.cancel_run(run_id)
    status = local_run_env.run_status(run_id)
    assert status.state == "canceled" and status.error == "canceled on request"
    deadline = time.monotonic() + 10
    while living_members(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert living_members(group) == [], "neither the runner nor the step it started is left running"


def test_three_runs_never_compare_a_model_on_images_it_trained_on(
    local_run_env: LocalPipelineRunner, tmp_path: Path
) -> None:
    """Data grows over three runs: no image changes sides, and each decision scores both models on the holdout."""
    from pipeline_steps.data_split import basename
    from pipeline_steps.mltable_io import read_records

    sides_seen: dict[str, str] = {}
    trained_by_earlier_runs: set[str] = set()
    for run in range(3):
        zip_path = write_dataset_zip(tmp_path / f"set{run}.zip", count=16, seed=4, spec=SMALL, start=16 * run)
        loaded = data_loader.main(
            ["--raw-blob-sas-url", str(zip_path), "--raw-input-path", str(tmp_path / f"raw{run}")]
        )
        assert loaded == 0
        run_id = local_run_env.submit_pipeline(f"run {run}")
        assert wait_until_finished(local_run_env, run_id) == "completed", local_run_env.run_status(run_id).error
        outputs = local_run_env.root / "runs" / run_id / "outputs"
        sides = {
            side: {basename(r) for r in read_records(outputs / "data_split" / f"{side}_output_path")}
            for side in ("train", "val", "holdout")
        }
        now = {name: side for side, names in sides.items() for name in names}
        assert len(now) == 16 * (run + 1) and sum(map(len, sides.values())) == len(now), "one side per image"
        assert {name: now[name] for name in sides_seen} == sides_seen, f"run {run} moved an image"
        assert not (sides["val"] | sides["holdout"]) & trained_by_earlier_runs
        decision = local_run_env.run_status(run_id).decision
        assert decision is not None and decision.comparison.holdout is not None
        assert decision.comparison.holdout.images == len(sides["holdout"]) > 0
        if run > 0:
            assert decision.comparison.interval is not None, decision.comparison.not_rescored
        sides_seen, trained_by_earlier_runs = now, trained_by_earlier_runs | sides["train"]
