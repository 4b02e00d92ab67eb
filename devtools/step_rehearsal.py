"""Rehearse the pipeline's CPU steps, their real code paths, in this Python environment.

    python -m devtools.step_rehearsal [--work DIR] [--automl-python PATH]

CI runs it inside the steps' pinned Azure ML environment (`make env-check`), where an import that only
the development environment provides would otherwise surface on Azure ML, after the GPU time is spent.
Every step of the pipeline's graph runs as its own process with the local runner's own commands
(`local_runner.step_commands`: its settings, its folders), on the checked-in sample sheets laid out as
the local runner downloads the datastore, plus what Azure ML adds: image URLs under an `azureml://`
prefix that the tag step maps onto the image folder. Training is the one step left out (torch or
AutoML): two stand-in models take its place in turn (`devtools.stand_in_model`), MLflow models whose
code needs nothing beyond this environment, one finding half of the symbols and one nearly all; after
the second, the steps from training on run again. The registry is the local one (MLflow on SQLite).
The first model must be promoted (nothing was best), and the second must beat it on the holdout,
through MLflow's `models predict` (served in this process). Exits 1 naming the step that failed.

With `--automl-python` (`make automl-rehearsal`) the two models are real AutoML for Images MLflow
models, saved in that interpreter through AutoML's own wrapper class (`devtools.automl_model`), and the
tag step scores them there, in AutoML's interpreter, as it does in its Azure ML image
(`--scoring-env-manager automl`). Their weights are random, so who wins is not checked: the first
must be promoted, the second compared with it on the holdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from urllib.parse import unquote

from retrainer.assembly.graph import TRAIN
from retrainer.assembly.step_inputs import as_flags
from retrainer.settings import Settings, load_settings
from retrainer.workspace.local_runner import run_folders, step_commands
from shared.promotion import PromotionRecord

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_artifacts" / "data"
STAND_IN_CODE = Path(__file__).resolve().parent / "stand_in_model.py"
#: Where Azure ML would mount the image folder from: the tag step maps this prefix onto the mount.
IMAGES_PREFIX = (
    "azureml://subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rehearsal/workspaces/"
    "rehearsal/datastores/retraining_data/paths/data/images"
)
#: The stand-ins' recall: the share of each image's symbols they find.
RECALLS = (0.5, 0.95)
AUTOML_MODEL_SCRIPT = Path(__file__).resolve().parent / "automl_model.py"


class RehearsalFailed(RuntimeError):
    """A step failed or decided otherwise than it must; the message names the step."""


def rehearsal_commands(work: Path, settings: Settings, automl_python: str | None = None) -> dict[str, list[str]]:
    """Each step's command as the local runner gives it for a run in `work`, the sample sheets laid out there as
    its download lays out the datastore's, with the inputs Azure ML adds (and AutoML's interpreter to score in)."""
    shutil.copytree(SAMPLES, work / "data", dirs_exist_ok=True)
    scoring = {"scoring_env_manager": "automl", "automl_python": automl_python} if automl_python else {}
    as_on_azure_ml: dict[str, dict[str, object]] = {
        "data_aggregation": {"input_images_string_absolute_path": IMAGES_PREFIX},
        "tag_model": {"images_string_absolute_path": IMAGES_PREFIX, **scoring},
    }
    local = step_commands(work, settings)
    return {step: command + as_flags(as_on_azure_ml.get(step, {})) for step, command in local.items()}


def step_env(workspace: Path) -> dict[str, str]:
    """This environment, with the local workspace (its MLflow registry on SQLite) at `workspace`."""
    env = {
        **os.environ,
        "WORKSPACE_BACKEND": "local",
        "LOCAL_WORKSPACE_DIR": str(workspace),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(variable, None)
    return env


def run_step(step: str, command: list[str], env: dict[str, str], logs: Path) -> str:
    """Run a step's command (the last flag of a name wins); its output, or RehearsalFailed."""
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    with (logs / f"{step}.log").open("a") as log:
        log.write(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise RehearsalFailed(f"step {step} failed (exit {result.returncode}): {tail}")
    return result.stdout.strip()


def stand_in_answers(aggregated: Path, recall: float, images: Path, prefix: str) -> dict[str, list[dict]]:
    """For each image of an annotation folder, `recall` of its boxes (chosen by hash), keyed by the image's sha256."""
    answers: dict[str, list[dict]] = {}
    for line in (aggregated / "annotations.jsonl").read_text().splitlines():
        record = json.loads(line)
        image = images / unquote(record["image_url"].removeprefix(prefix.rstrip("/") + "/"))
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        answers[digest] = [
            {"box": {k: box[k] for k in ("topX", "topY", "bottomX", "bottomY")}, "label": box["label"], "score": 0.9}
            for index, box in enumerate(record["label"])
            if int(hashlib.sha256(f"{digest}:{index}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < recall
        ]
    return answers


def save_stand_in(folder: Path, answers: dict[str, list[dict]], validation_map: float | None = None) -> Path:
    """An MLflow model folder of the stand-in with these answers (image sha256, or `*` for any other image, to
    boxes), and with a validation figure the metrics.json a trainer writes beside it."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    table = folder.parent / f"{folder.name}-answers.json"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(json.dumps(answers))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        mlflow.pyfunc.save_model(
            path=str(folder),
            python_model=str(STAND_IN_CODE),
            artifacts={"answers": str(table)},
            signature=ModelSignature(inputs=Schema([ColSpec("string", "image")])),  # AutoML's input
            pip_requirements=["mlflow-skinny", "pandas"],
        )
    if validation_map is not None:
        metrics = {"mean_average_precision": validation_map, "precision": 1.0, "recall": validation_map}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def save_one_symbol_model(folder: Path, label: str) -> Path:
    """A stand-in that finds one symbol of class `label` on every image: what the endpoint's tests serve."""
    box = {"topX": 0.1, "topY": 0.1, "bottomX": 0.2, "bottomY": 0.3}
    return save_stand_in(folder, {"*": [{"box": box, "label": label, "score": 0.9}]})  # "*": any image


def save_automl_model(folder: Path, python: str, aggregated: Path, seed: int, logs: Path) -> Path:
    """An AutoML MLflow model saved in AutoML's interpreter (`devtools/automl_model.py`), with a metrics.json."""
    classes = sorted(
        {
            str(box["label"])
            for line in (aggregated / "annotations.jsonl").read_text().splitlines()
            for box in json.loads(line)["label"]
        }
    )
    command = [python, str(AUTOML_MODEL_SCRIPT), "--output", str(folder), "--classes", ",".join(classes)]
    result = subprocess.run([*command, "--seed", str(seed)], capture_output=True, text=True, check=False)
    with (logs / "automl_model.log").open("a") as log:
        log.write(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-8:])
        raise RehearsalFailed(f"saving an AutoML model in {python} failed (exit {result.returncode}): {tail}")
    metrics = {"mean_average_precision": 0.5, "precision": 0.5, "recall": 0.5}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def rehearse(work: Path, automl_python: str | None = None) -> list[PromotionRecord]:
    """Run every step but training on the sample sheets, then the steps from training on again with the second
    model; the tag step's two records, or RehearsalFailed.

    With `automl_python`, the models are AutoML's, scored in that interpreter."""
    settings = load_settings(
        WORKSPACE_BACKEND="local",
        LOCAL_WORKSPACE_DIR=work / "workspace",
        HOLDOUT_FRACTION=0.4,
        PROMOTION_MIN_HOLDOUT_IMAGES=5,  # the 24 sample sheets leave about 9 for the holdout
    )
    commands, env, logs = rehearsal_commands(work, settings, automl_python), step_env(work / "workspace"), work / "logs"
    folders = run_folders(work)
    logs.mkdir(parents=True, exist_ok=True)
    order = list(commands)
    aggregated = folders["data_aggregation"]["output_path"]
    records = []
    for index, recall in enumerate(RECALLS, start=1):
        for step in order if index == 1 else order[order.index(TRAIN) :]:
            shutil.rmtree(work / "outputs" / step, ignore_errors=True)  # what the step wrote in the first round
            if step != TRAIN:
                run_step(step, commands[step], env, logs)
                continue
            model = folders[TRAIN]["output"]
            model.parent.mkdir(parents=True, exist_ok=True)
            if automl_python:
                save_automl_model(model, automl_python, aggregated, index, logs)
            else:
                save_stand_in(model, stand_in_answers(aggregated, recall, SAMPLES / "images", IMAGES_PREFIX), recall)
        records.append(PromotionRecord.read(folders["tag_model"]["best_model_metadata_path"]))
    check_decisions(records, better_wins=automl_python is None)
    return records


def check_decisions(records: list[PromotionRecord], better_wins: bool = True) -> None:
    first, second = records
    if not first.promoted or first.best_version != "1":
        raise RehearsalFailed(f"step tag_model: the first model was not promoted: {first.reason}")
    interval = second.comparison.interval
    if interval is None or not second.comparison.scored_images:
        raise RehearsalFailed(f"step tag_model: the models were not compared on the holdout: {second.reason}")
    if better_wins and (not second.promoted or interval.low <= 0 or second.best_version != "2"):
        raise RehearsalFailed(f"step tag_model: the better stand-in did not win on the holdout: {second.reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="folder for the run (default: a temporary one, removed after)")
    parser.add_argument("--automl-python", help="AutoML's interpreter: rehearse with real AutoML models scored there")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="step-rehearsal-"))
    try:
        records = rehearse(work, args.automl_python)
    except RehearsalFailed as error:
        print(f"step rehearsal: {error} (logs in {work / 'logs'})", file=sys.stderr)
        return 1
    decided = records[-1]
    models = f"two AutoML models in {args.automl_python}" if args.automl_python else "two stand-ins"
    print(
        f"step rehearsal: the steps but training ran in {sys.prefix}; the tag step scored {models} on "
        f"{decided.comparison.scored_images} holdout images in {decided.comparison.scoring_seconds} s and decided: "
        f"{decided.reason}"
    )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
