"""Score MLflow models that follow AutoML's scoring contract (local or AutoML) on holdout sheets.

Every model is called the same way, MLflow's `models predict` with `--env-manager local` on a JSON
file of base64 images: in this process (`local`: a model whose code this environment has, such as
the local detector), or in the environment AutoML's code already lives in (`automl`: a second Python
interpreter in the tag step's image, AutoML's own training environment, pinned with the release; see
`components/scoring.Dockerfile`). No environment is ever built at run time.

A comparison is bounded twice: at most `limit` sheets, a sample fixed by a seeded hash of each
image's path inside the image folder (the same images run after run, wherever a job mounts the
folder or a local run copies it, so decisions stay comparable; a growing holdout only changes the
sample where a new image ranks in), and a deadline. Both models score each batch in turn, so
whatever was scored when time ran out is scored by both. The first batch is small; each later one
is as large as the pace measured on the one before lets the time left afford (doubling at most), so
no batch is started that the deadline cannot hold.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline_steps.evaluation.metrics import Prediction
from shared.evaluation.sheets import Sheet, from_contract

#: The sample's seed: changing it changes which holdout images every later decision is scored on.
SAMPLE_SEED = "pid-symbol-holdout-sample"
#: Where a model's code runs: this process, or AutoML's interpreter (`ModelRuntime`).
RuntimeKind = Literal["local", "automl"]
RUNTIME_KINDS: tuple[RuntimeKind, ...] = ("local", "automl")
#: Sheets of the first batch: it measures the pace (AutoML's tiled model can take minutes a sheet on a CPU).
FIRST_BATCH = 2
#: Sheets a batch holds at most. In AutoML's interpreter each call starts a process and loads the model, so
#: calls may be large; in this process a call is cheap, and small calls keep memory low.
MAX_BATCH: dict[RuntimeKind, int] = {"local": 8, "automl": 32}
#: Lines of a failed call's error output kept in the message (its end, where Python puts the error).
_ERROR_LINES = 15


@dataclass(frozen=True)
class ModelRuntime:
    """Where the models' code runs: `local` in this process, or `automl` in the interpreter `python`."""

    kind: RuntimeKind = "local"
    python: str | None = None

    def __post_init__(self) -> None:
        if (self.kind == "automl") != bool(self.python):
            raise ValueError("an automl runtime needs its interpreter, and a local one takes none")


class ModelNotScorable(RuntimeError):
    """A model could not be fetched, loaded or could not score the sheets; the message names the model."""

    def __init__(self, message: str, model: Path | None = None) -> None:
        super().__init__(message)
        #: The model folder that failed, so a caller scoring several can tell which one.
        self.model = model


class IncompatibleModelError(ModelNotScorable):
    """The model's weights were saved for another detector architecture than the loading code builds."""


def scoring_sample(sheets: list[Sheet], limit: int | None, seed: str = SAMPLE_SEED) -> list[Sheet]:
    """At most `limit` sheets (all with None), in the seeded order in which they are scored."""

    def rank(sheet: Sheet) -> str:
        # The path inside the image folder, never the folder itself: on Azure ML that lies under each job's
        # own mount point, locally under each run's folder, and the sample would be redrawn run after run.
        return hashlib.sha256(f"{seed}\0{sheet.relative_name()}".encode()).hexdigest()

    ordered = sorted(sheets, key=rank)
    return ordered if limit is None else ordered[:limit]


def _serving_input(sheets: list[Sheet]) -> str:
    """The sheets as MLflow's serving input (`dataframe_split`), one `image` column of base64 strings."""
    images = [[base64.b64encode(s.path.read_bytes()).decode("ascii")] for s in sheets]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": images}})


def predict_sheets(
    model_folder: Path, sheets: list[Sheet], runtime: ModelRuntime = ModelRuntime(), timeout: float | None = None
) -> list[Prediction]:
    """One model's predictions for the sheets, through the scoring contract (base64 in, normalised boxes out).

    `timeout` bounds a call in AutoML's interpreter (TimeoutError); a call in this process cannot be cut short.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar a batch fills the step's log
    with tempfile.TemporaryDirectory() as scratch:
        source, output = Path(scratch) / "input.json", Path(scratch) / "predictions.json"
        source.write_text(_serving_input(sheets))
        if runtime.kind == "automl":
            _predict_in(str(runtime.python), model_folder, source, output, timeout)
        else:
            _predict_here(model_folder, source, output)
        rows = json.loads(output.read_text())["predictions"]
    if len(rows) != len(sheets):
        raise ModelNotScorable(
            f"the model at {model_folder} answered {len(rows)} rows for {len(sheets)} images", model_folder
        )
    try:
        return [from_contract(list(row["boxes"]), sheet) for sheet, row in zip(sheets, rows, strict=True)]
    except ValueError as error:
        raise ModelNotScorable(f"the model at {model_folder}: {error}", model_folder) from None


def _predict_here(model_folder: Path, source: Path, output: Path) -> None:
    import mlflow.models

    try:
        mlflow.models.predict(
            model_uri=str(model_folder),
            input_path=str(source),
            output_path=str(output),
            content_type="json",
            env_manager="local",
        )
    except ModelNotScorable as error:
        error.model = model_folder
        raise
    except Exception as error:  # in this process the model's own code runs: whatever it raises, it cannot score
        raise ModelNotScorable(f"the model at {model_folder} could not score: {error!r}", model_folder) from error


def _predict_in(python: str, model_folder: Path, source: Path, output: Path, timeout: float | None) -> None:
    """MLflow's own command in AutoML's interpreter, in the environment it already has (`--env-manager local`)."""
    command = [python, "-m", "mlflow", "models", "predict", "--model-uri", str(model_folder)]
    command += ["--input-path", str(source), "--output-path", str(output), "--content-type", "json"]
    command += ["--env-manager", "local"]
    # Its environment's own libraries first: the step's image puts the steps' environment's first for the step.
    libraries = [str(Path(python).parent.parent / "lib"), os.environ.get("LD_LIBRARY_PATH", "")]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(part for part in libraries if part)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"scoring {model_folder} did not finish in the {timeout:.0f} s left") from None
    except OSError as error:  # the image holds no such interpreter
        raise ModelNotScorable(f"AutoML's interpreter {python} cannot run: {error}", model_folder) from None
    if done.returncode != 0:
        said = "\n".join(done.stderr.strip().splitlines()[-_ERROR_LINES:])
        raise ModelNotScorable(
            f"the model at {model_folder} could not score (exit {done.returncode}): {said}", model_folder
        )


@dataclass(frozen=True)
class ScoredSheets:
    """The sheets every model scored (a prefix of the sample), and each model's predictions for them."""

    sheets: list[Sheet]
    predictions: list[list[Prediction]]
    #: Whether the time budget stopped scoring before the sample's end.
    stopped_by_budget: bool


def next_batch(previous: int, seconds_per_sheet: float, seconds_left: float | None, cap: int) -> int:
    """Sheets the next batch holds: at most twice the last, at most `cap`, and no more than the time left affords
    at the pace measured (0: stop here)."""
    size = min(cap, 2 * previous)
    if seconds_left is None:
        return size
    if seconds_left <= 0:
        return 0
    return size if seconds_per_sheet <= 0 else min(size, int(seconds_left / seconds_per_sheet))


def score_models(
    model_folders: list[Path],
    sheets: list[Sheet],
    runtime: ModelRuntime = ModelRuntime(),
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ScoredSheets:
    """Each model on the same sheets, batch by batch, until the sheets run out or the next batch would not
    finish by `deadline` (a `clock` reading).

    The first batch, `FIRST_BATCH` sheets, is scored whatever the time left: a decision needs some evidence,
    and it measures the pace. Each later batch is sized by `next_batch`; a call in AutoML's interpreter that
    outlives the deadline is stopped, and its batch does not count.
    """
    predictions: list[list[Prediction]] = [[] for _ in model_folders]
    scored, size, pace = 0, min(FIRST_BATCH, MAX_BATCH[runtime.kind]), 0.0
    while scored < len(sheets):
        if scored:
            left = None if deadline is None else deadline - clock()
            size = next_batch(size, pace, left, MAX_BATCH[runtime.kind])
            if size == 0:
                return ScoredSheets(sheets[:scored], predictions, stopped_by_budget=True)
        batch = sheets[scored : scored + size]
        started = clock()
        answers: list[list[Prediction]] = []
        try:
            for folder in model_folders:
                timeout = None if deadline is None or not scored else max(deadline - clock(), 0.0)
                answers.append(predict_sheets(folder, batch, runtime, timeout))
        except TimeoutError:
            return ScoredSheets(sheets[:scored], predictions, stopped_by_budget=True)
        for kept, new in zip(predictions, answers, strict=True):
            kept.extend(new)
        scored += len(batch)
        pace = (clock() - started) / len(batch)
    return ScoredSheets(sheets, predictions, stopped_by_budget=False)
