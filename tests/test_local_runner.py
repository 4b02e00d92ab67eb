"""The local runner: the graph's steps as processes, from data in Azurite to a tagged model; truthful status."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from devtools.synthetic import SheetSpec, write_dataset_zip
from retrainer import cli
from retrainer.ingestion import loader as data_loader
from retrainer.workspace.local import STATUS_FILE, LocalPipelineRunner, LocalRunStatus
from shared.promotion import PromotionRecord
from shared.records import RunState
from shared.registry.local import LocalModelRegistry

SMALL = SheetSpec(min_side=256, max_side=320, min_symbols=3, max_symbols=5)

# The tests marked slow run the real steps as processes; the status file's own tests are fast.


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


def assert_validated_and_tagged_as_measured(workspace: LocalPipelineRunner, run_id: str) -> None:
    """The invariant every local run keeps: the train step validated on the split's val images, and the
    version it registered carries exactly the train step's figures (a8069e8 trained every model blind)."""
    from shared.contracts import RegisteredModel, TrainingMetrics
    from shared.mltable_io import read_records

    outputs = workspace.root / "runs" / run_id / "outputs"
    val_images = len(list(read_records(outputs / "data_split" / "val_output_path")))
    assert val_images > 0, "the split kept images for validation"
    assert f"validating on {val_images}," in workspace.run_log(run_id, "train")
    metrics = TrainingMetrics.read(outputs / "train" / "best_model")
    assert metrics.val_images == val_images and metrics.mean_average_precision is not None
    registered = RegisteredModel.read(outputs / "register_model" / "model_metadata_path")
    version = next(
        v for v in LocalModelRegistry(workspace.root).model_versions(registered.name) if v.version == registered.version
    )
    for figure in ("mean_average_precision", "coco_map", "precision", "recall"):
        assert version.tags[figure] == f"{getattr(metrics, figure):.6f}", figure
    assert json.loads(version.tags["per_class_ap50"]) == {c: round(v["ap50"], 4) for c, v in metrics.per_class.items()}
    assert version.tags["val_images"] == str(val_images) and version.validated


@pytest.mark.slow
def test_local_run_goes_from_azurite_data_to_a_tagged_model(
    local_run_env: LocalPipelineRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_images(tmp_path)
    started = time.monotonic()
    run_id = local_run_env.submit_pipeline("test")
    assert time.monotonic() - started < 2.0, "submit returns at once"
    assert local_run_env.run_status(run_id).state in ("queued", "running")
    assert wait_until_finished(local_run_env, run_id) == "completed", local_run_env.run_status(run_id).error
    assert_validated_and_tagged_as_measured(local_run_env, run_id)
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
    listed = capsys.readouterr().out
    assert "yes" in listed and "not validated" not in listed
    assert cli.main(["runs", "--json"]) == 0
    assert run_id in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_with_no_data_fails_with_its_reason(local_run_env: LocalPipelineRunner) -> None:
    run_id = local_run_env.submit_pipeline("empty")
    assert wait_until_finished(local_run_env, run_id, timeout=60) == "failed"
    assert "holds no images" in (local_run_env.run_status(run_id).error or "")


@pytest.mark.slow
def test_a_killed_runner_reads_as_failed_not_running(local_run_env: LocalPipelineRunner, tmp_path: Path) -> None:
    load_images(tmp_path, count=12)
    run_id = local_run_env.submit_pipeline("killed")
    pid = int((local_run_env.root / "runs" / run_id / "runner.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not local_run_env.run_status(run_id).finished and time.monotonic() < deadline:
        time.sleep(0.1)
    status = local_run_env.run_status(run_id)
    assert status.state == "failed" and "ended without finishing" in (status.error or "")


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_three_runs_never_compare_a_model_on_images_it_trained_on(
    local_run_env: LocalPipelineRunner, tmp_path: Path
) -> None:
    """Data grows over three runs: no image changes sides, and each decision scores both models on the holdout."""
    from pipeline_steps.split_sides import basename
    from shared.mltable_io import read_records

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
        assert_validated_and_tagged_as_measured(local_run_env, run_id)  # warm-started runs too
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


# --- status.json: one typed model, written whole -------------------------------------------------------------


def a_decision() -> PromotionRecord:
    return PromotionRecord(
        name="pid-symbol-detector",
        challenger_version="2",
        chosen_version="2",
        best_version="2",
        promoted=True,
        challenger_score=0.9,
        reason="the challenger is better",
    )


def submitted_run(root: Path, run_id: str = "run-20260101-000000-abcdef", runner_pid: int | None = None) -> Path:
    """A run folder as `submit_pipeline` leaves it: queued, and the runner's pid (this process: alive)."""
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    LocalRunStatus(run_id=run_id, label="claim-1").write(run_dir)
    (run_dir / "runner.pid").write_text(str(runner_pid or os.getpid()))
    return run_dir


def test_the_runners_status_updates_keep_what_they_do_not_change(tmp_path: Path) -> None:
    run_dir = submitted_run(tmp_path)
    LocalRunStatus.update(run_dir, state="running", started="2026-01-01T00:00:00+00:00", pid=123)
    LocalRunStatus.update(run_dir, step="train", images=24)
    status = LocalRunStatus.read(run_dir)
    assert (status.state, status.step, status.images, status.pid, status.label) == (
        RunState.RUNNING,
        "train",
        24,
        123,
        "claim-1",
    )
    LocalRunStatus.update(
        run_dir, state="completed", step=None, ended="2026-01-01T01:00:00+00:00", decision=a_decision()
    )
    assert LocalRunStatus.read(run_dir).decision == a_decision()
    assert [path.name for path in run_dir.iterdir() if path.name != "runner.pid"] == [STATUS_FILE], (
        "no partial file left"
    )


def test_a_field_the_status_does_not_have_is_refused_when_written(tmp_path: Path) -> None:
    run_dir = submitted_run(tmp_path)
    before = (run_dir / STATUS_FILE).read_text()
    with pytest.raises(ValidationError, match="stage"):
        LocalRunStatus.update(run_dir, stage="train")
    with pytest.raises(ValidationError, match="images"):
        LocalRunStatus.update(run_dir, images="many")
    assert (run_dir / STATUS_FILE).read_text() == before


def test_a_write_that_breaks_off_leaves_the_last_whole_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The status is written beside the file and then replaces it: a reader sees the old status or the new one."""
    run_dir = submitted_run(tmp_path)
    real_write_text = Path.write_text

    def write_half_then_fail(path: Path, text: str, *args: object, **kwargs: object) -> int:
        real_write_text(path, text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        LocalRunStatus.update(run_dir, state="running")
    monkeypatch.undo()
    assert LocalRunStatus.read(run_dir).state == RunState.QUEUED


def test_the_pipeline_runner_reads_the_status_the_runner_wrote(tmp_path: Path) -> None:
    runner = LocalPipelineRunner(tmp_path)
    run_dir = submitted_run(tmp_path)
    run_id = run_dir.name
    assert runner.run_status(run_id).state == RunState.QUEUED and runner.run_status(run_id).label == "claim-1"
    LocalRunStatus.update(run_dir, state="running", step="data_split", started="2026-01-01T00:00:00+00:00")
    status = runner.run_status(run_id)
    assert (status.state, status.detail, status.started) == (
        RunState.RUNNING,
        "data_split",
        "2026-01-01T00:00:00+00:00",
    )
    LocalRunStatus.update(
        run_dir, state="completed", step=None, ended="2026-01-01T01:00:00+00:00", decision=a_decision()
    )
    status = runner.run_status(run_id)
    assert status.finished and status.decision == a_decision() and status.ended == "2026-01-01T01:00:00+00:00"


def test_a_status_left_running_by_a_dead_runner_reads_as_failed(tmp_path: Path) -> None:
    run_dir = submitted_run(tmp_path, runner_pid=2**31 - 1)  # no such process
    LocalRunStatus.update(run_dir, state="running", step="train")
    status = LocalPipelineRunner(tmp_path).run_status(run_dir.name)
    assert status.state == RunState.FAILED and "ended without finishing" in (status.error or "")
    assert LocalRunStatus.read(run_dir).state == RunState.RUNNING, "reading changes nothing"
