"""Local pipeline runner: the steps of the pipeline's graph as processes over a run folder.

    python -m retrainer.workspace.local_runner <run folder>

Started detached by `LocalPipelineRunner.submit_pipeline`. It downloads the datastore's images and
per-image JSONL (Azurite locally), then runs `python -m pipeline_steps.<step>` for each step with
its log in `logs/<step>.log`, and keeps `status.json` current (`LocalRunStatus`, atomically replaced). SIGTERM
(cancel) stops the step in progress and marks the run canceled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from retrainer.settings import Settings, get_settings
from retrainer.workspace.local import LocalRunStatus
from shared.promotion import PromotionRecord


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


#: The local trainer's flag for what the graph calls the training step's `best_model`.
_LOCAL_TRAIN_FLAGS = {"best_model": "output"}
#: Where `download_data` puts each of the pipeline's inputs, under the run's `data/`.
_LOCAL_DATA = {"images": "images", "labels": "labels", "label_map": "label_map.json"}


def data_inputs(data: Path) -> dict[str, Path]:
    """The pipeline's inputs in a folder laid out as a run's `data/` (`download_data`'s layout)."""
    return {name: data / place for name, place in _LOCAL_DATA.items()}


def step_folders(data: Mapping[str, Path], outputs: Path) -> dict[str, dict[str, Path]]:
    """Each step's data flags, from the pipeline's graph: a pipeline input where `data` has it, an earlier step's
    output (and the step's own) at `outputs/<step>/<output>`."""
    from retrainer.assembly.graph import STEPS, TRAIN, PipelineInput

    wiring = {}
    for step in STEPS:
        folders: dict[str, Path] = {
            name: data[source.name] if isinstance(source, PipelineInput) else outputs / source.step / source.output
            for name, source in step.inputs.items()
        }
        # An optional input the datastore does not hold (no label map) is left out, as on Azure ML. An earlier
        # step's output is always passed: these commands are built before any step runs, so it cannot exist yet.
        folders = {
            name: path
            for name, path in folders.items()
            if name not in step.optional or not isinstance(step.inputs[name], PipelineInput) or path.exists()
        }
        folders.update(
            {_LOCAL_TRAIN_FLAGS.get(o, o) if step.name == TRAIN else o: outputs / step.name / o for o in step.outputs}
        )
        wiring[step.name] = folders
    return wiring


def step_commands(run_dir: Path, settings: Settings, champion: Path | None = None) -> dict[str, list[str]]:
    """Each step's command, in the graph's order: its settings (the table every runner uses), its data inputs
    as the folders earlier steps wrote (`run_folders`), and the champion to start from."""
    from retrainer.assembly.graph import TRAIN
    from retrainer.assembly.step_inputs import step_settings

    data = run_dir / "data"
    inputs = step_settings(settings)
    local: dict[str, dict[str, object]] = {
        TRAIN: {
            "max_minutes": settings.LOCAL_TRAINING_MINUTES,
            "epochs": settings.LOCAL_TRAINING_EPOCHS,
            "warm_epochs": settings.LOCAL_WARM_START_EPOCHS,
            "warm_start_model": champion,
            **({"label_map": data / "label_map.json"} if (data / "label_map.json").is_file() else {}),
        },
        "tag_model": {"scoring_env_manager": "local"},  # the local detector runs in the step's own environment
    }
    return {
        step: step_command(step, {**inputs.get(step, {}), **local.get(step, {}), **folders})
        for step, folders in run_folders(run_dir).items()
    }


def run_folders(run_dir: Path) -> dict[str, dict[str, Path]]:
    """`step_folders` of a run: the pipeline's inputs where `download_data` puts them, the outputs in `outputs/`."""
    return step_folders(data_inputs(run_dir / "data"), run_dir / "outputs")


def step_command(step: str, inputs: Mapping[str, object]) -> list[str]:
    """`python -m pipeline_steps.<step>` with these inputs as its flags."""
    from retrainer.assembly.step_inputs import as_flags

    return [sys.executable, "-m", f"pipeline_steps.{step}", *as_flags(inputs)]


def champion_model(settings: Settings) -> Path | None:
    """The folder of the model tagged best, which training starts from (None before the first promotion)."""
    from shared.registry.local import LocalModelRegistry

    registry = LocalModelRegistry(settings.LOCAL_WORKSPACE_DIR)
    champion = next((v for v in registry.model_versions(settings.MODEL_BASE_NAME) if v.is_best), None)
    return Path(champion.uri) if champion is not None else None


def download_data(run_dir: Path, settings: Settings) -> int:
    """Images and per-image JSONL of the datastore into `data/`; returns the number of images."""
    from retrainer.datastore import Datastore

    store = Datastore.from_settings(settings)
    images = 0
    for folder, keep in (
        (settings.IMAGE_FOLDER, lambda name: True),
        (settings.LABEL_FOLDER, lambda n: n.endswith(".jsonl")),
    ):
        target = run_dir / "data" / ("images" if folder == settings.IMAGE_FOLDER else "labels")
        target.mkdir(parents=True, exist_ok=True)
        for blob in store.list(folder + "/"):
            relative = blob.name[len(folder) + 1 :]
            if not keep(relative) or ".." in relative.split("/"):
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(store.read(blob.name))
            images += folder == settings.IMAGE_FOLDER
    if store.exists(settings.LABEL_MAP_BLOB):  # class names for the evaluation report
        (run_dir / "data" / "label_map.json").write_bytes(store.read(settings.LABEL_MAP_BLOB))
    return images


def run(run_dir: Path) -> int:
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    current: dict[str, subprocess.Popen | None] = {"process": None}

    def cancel(signum: int, frame: object) -> None:
        process = current["process"]
        if process is not None and process.poll() is None:
            process.terminate()
        LocalRunStatus.update(run_dir, state="canceled", ended=now(), error="canceled on request")
        sys.exit(130)

    signal.signal(signal.SIGTERM, cancel)
    LocalRunStatus.update(run_dir, state="running", started=now(), pid=os.getpid())
    try:
        settings = get_settings()
        LocalRunStatus.update(run_dir, step="download")
        images = download_data(run_dir, settings)
        LocalRunStatus.update(run_dir, images=images)
        if images == 0:
            raise RuntimeError("the datastore holds no images")
        champion = champion_model(settings) if settings.WARM_START else None
        LocalRunStatus.update(run_dir, warm_start_from=str(champion) if champion else None)
        for step, command in step_commands(run_dir, settings, champion).items():
            LocalRunStatus.update(run_dir, step=step)
            with open(logs / f"{step}.log", "wb") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir)
                current["process"] = process
                code = process.wait()
                current["process"] = None
            if code != 0:
                tail = (logs / f"{step}.log").read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"step {step} failed (exit {code}): " + " | ".join(tail))
    except Exception as error:  # the run's outcome is recorded, never lost
        LocalRunStatus.update(run_dir, state="failed", ended=now(), error=str(error)[-2000:])
        return 1
    decision = PromotionRecord.read(run_dir / "outputs" / "tag_model" / "best_model_metadata_path")
    LocalRunStatus.update(run_dir, state="completed", step=None, ended=now(), decision=decision)
    return 0


def main() -> int:
    return run(Path(sys.argv[1]).resolve())


if __name__ == "__main__":
    sys.exit(main())
