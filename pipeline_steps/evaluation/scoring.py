"""Score MLflow models that follow AutoML's scoring contract (local or AutoML) on holdout sheets.

Every model is called the same way, `mlflow.models.predict`: in this process (`local`: a model whose
code this environment has, such as the local detector) or in the environment the model declares
(`conda`, `virtualenv`, `uv`: an AutoML model, whose torch the steps' environment does not carry).
MLflow builds that environment once per process and reuses it for every later call with the same
declaration, so a step that scores two AutoML models in many batches builds it once.

A comparison is bounded twice: at most `limit` sheets, a sample fixed by a seeded hash of each
image's path inside the image folder (the same images run after run, wherever a job mounts the
folder or a local run copies it, so decisions stay comparable; a growing holdout only changes the
sample where a new image ranks in), and a time budget checked between batches. Both models score
each batch in turn, so whatever was scored when the budget ran out is scored by both.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline_steps.evaluation.metrics import Prediction
from pipeline_steps.evaluation.sheets import Sheet

#: The sample's seed: changing it changes which holdout images every later decision is scored on.
SAMPLE_SEED = "pid-symbol-holdout-sample"
#: Sheets per `mlflow.models.predict` call. In a model's own environment each call starts a process
#: and loads the model, so calls are large; in this process a call is cheap, and small calls keep memory low.
_BATCH = {"local": 8, "model-environment": 32}


class ModelNotScorable(RuntimeError):
    """A model could not be fetched, loaded or could not score the sheets; the message names the model."""

    def __init__(self, message: str, model: Path | None = None) -> None:
        super().__init__(message)
        #: The model folder that failed, so a caller scoring several can tell which one.
        self.model = model


class IncompatibleModelError(ModelNotScorable):
    """The model's weights were saved for another detector architecture than the loading code builds."""


def from_contract(boxes: list[dict], sheet: Sheet) -> Prediction:
    """AutoML's normalised boxes back to the sheet's pixels; ValueError for an answer outside the contract."""
    try:
        coordinates = np.array(
            [[b["box"]["topX"], b["box"]["topY"], b["box"]["bottomX"], b["box"]["bottomY"]] for b in boxes],
            dtype=np.float32,
        ).reshape(-1, 4)
        scores = np.array([float(b["score"]) for b in boxes], dtype=np.float32)
        labels = tuple(str(b["label"]) for b in boxes)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"an answer for {sheet.path.name} is not a box of the scoring contract: {error!r}") from None
    if not (np.isfinite(coordinates).all() and np.isfinite(scores).all()):  # a diverged model answers NaN
        raise ValueError(f"the answer for {sheet.path.name} holds non-finite coordinates or scores")
    scale = np.array([sheet.width, sheet.height, sheet.width, sheet.height], dtype=np.float32)
    return Prediction(coordinates * scale, scores, labels)


def scoring_sample(sheets: list[Sheet], limit: int | None, seed: str = SAMPLE_SEED) -> list[Sheet]:
    """At most `limit` sheets (all with None), in the seeded order in which they are scored."""

    def rank(sheet: Sheet) -> str:
        # The path inside the image folder, never the folder itself: on Azure ML that lies under each job's
        # own mount point, locally under each run's folder, and the sample would be redrawn run after run.
        return hashlib.sha256(f"{seed}\0{sheet.relative_name()}".encode()).hexdigest()

    ordered = sorted(sheets, key=rank)
    return ordered if limit is None else ordered[:limit]


def _frame(sheets: list[Sheet]) -> pd.DataFrame:
    return pd.DataFrame({"image": [base64.b64encode(s.path.read_bytes()).decode("ascii") for s in sheets]})


def predict_sheets(model_folder: Path, sheets: list[Sheet], env_manager: str = "local") -> list[Prediction]:
    """One model's predictions for the sheets, through the scoring contract (base64 in, normalised boxes out)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar a batch fills the step's log
    import mlflow.models
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "predictions.json"
        try:
            mlflow.models.predict(
                model_uri=str(model_folder),
                input_data=_frame(sheets),
                output_path=str(output),
                env_manager=env_manager,
            )
        except ModelNotScorable as error:
            error.model = model_folder
            raise
        except MlflowException as error:  # in its own environment: the subprocess's failure
            raise ModelNotScorable(
                f"the model at {model_folder} could not score: {error.message}", model_folder
            ) from error
        except Exception as error:  # in this process the model's own code runs: whatever it raises, it cannot score
            raise ModelNotScorable(f"the model at {model_folder} could not score: {error!r}", model_folder) from error
        rows = json.loads(output.read_text())["predictions"]
    if len(rows) != len(sheets):
        raise ModelNotScorable(
            f"the model at {model_folder} answered {len(rows)} rows for {len(sheets)} images", model_folder
        )
    try:
        return [from_contract(list(row["boxes"]), sheet) for sheet, row in zip(sheets, rows, strict=True)]
    except ValueError as error:
        raise ModelNotScorable(f"the model at {model_folder}: {error}", model_folder) from None


@dataclass(frozen=True)
class ScoredSheets:
    """The sheets every model scored (a prefix of the sample), and each model's predictions for them."""

    sheets: list[Sheet]
    predictions: list[list[Prediction]]
    #: Whether the time budget stopped scoring before the sample's end.
    stopped_by_budget: bool


def score_models(
    model_folders: list[Path],
    sheets: list[Sheet],
    env_manager: str = "local",
    *,
    budget_seconds: float | None = None,
    clock: Any = time.monotonic,
) -> ScoredSheets:
    """Each model on the same sheets, batch by batch, until the sheets or the budget run out.

    The first batch is always scored, whatever the budget: a decision needs some evidence, and
    the first call is the one that builds a model's environment.
    """
    size = _BATCH["local" if env_manager == "local" else "model-environment"]
    started = clock()
    predictions: list[list[Prediction]] = [[] for _ in model_folders]
    scored = 0
    while scored < len(sheets):
        if scored and budget_seconds is not None and clock() - started >= budget_seconds:
            return ScoredSheets(sheets[:scored], predictions, stopped_by_budget=True)
        batch = sheets[scored : scored + size]
        for folder, answers in zip(model_folders, predictions, strict=True):
            answers.extend(predict_sheets(folder, batch, env_manager))
        scored += len(batch)
    return ScoredSheets(sheets, predictions, stopped_by_budget=False)
