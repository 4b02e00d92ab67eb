"""Score any MLflow model that follows AutoML's contract (local or AutoML) on an MLTable folder."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline_steps.detector.evaluation import Evaluation, Prediction, evaluate
from pipeline_steps.detector.sheets import Sheet, class_vocabulary, load_sheets

_BATCH = 4
#: Images per call when the model runs in its own environment (each call starts a process and loads it).
_MODEL_ENV_BATCH = 64


def from_contract(boxes: list[dict], sheet: Sheet) -> Prediction:
    """AutoML's normalised boxes back to the sheet's pixels."""
    scale = np.array([sheet.width, sheet.height, sheet.width, sheet.height], dtype=np.float32)
    coordinates = np.array(
        [[b["box"]["topX"], b["box"]["topY"], b["box"]["bottomX"], b["box"]["bottomY"]] for b in boxes],
        dtype=np.float32,
    ).reshape(-1, 4)
    return Prediction(
        coordinates * scale,
        np.array([float(b["score"]) for b in boxes], dtype=np.float32),
        tuple(str(b["label"]) for b in boxes),
    )


def load_model(model_folder: Path) -> Any:
    """An MLflow model folder (local or AutoML) as a pyfunc model."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(model_folder))


def _frame(sheets: list[Sheet]) -> pd.DataFrame:
    return pd.DataFrame({"image": [base64.b64encode(s.path.read_bytes()).decode("ascii") for s in sheets]})


def predict_sheets(model_folder: Path, sheets: list[Sheet], env_manager: str = "local") -> list[Prediction]:
    """Predictions through the scoring contract (base64 image bytes in, normalised boxes out).

    `mlflow.models.predict` runs the model where `env_manager` says: `local` in this environment,
    `conda` (or `virtualenv`, `uv`) in the one the model declares, as an AutoML model needs.
    """
    if env_manager == "local":
        return predict_loaded(load_model(model_folder), sheets)
    answers = _predict_in_model_environment(model_folder, sheets, env_manager)
    return [from_contract(boxes, sheet) for sheet, boxes in zip(sheets, answers, strict=True)]


def predict_loaded(model: Any, sheets: list[Sheet]) -> list[Prediction]:
    """Predictions of a pyfunc model loaded in this process, a few sheets at a time."""
    batches = (model.predict(_frame(sheets[i : i + _BATCH]))["boxes"] for i in range(0, len(sheets), _BATCH))
    answers = [list(boxes) for batch in batches for boxes in batch]
    return [from_contract(boxes, sheet) for sheet, boxes in zip(sheets, answers, strict=True)]


def _predict_in_model_environment(model_folder: Path, sheets: list[Sheet], env_manager: str) -> list[list[dict]]:
    import json
    import tempfile

    import mlflow.models

    answers: list[list[dict]] = []
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "predictions.json"
        for start in range(0, len(sheets), _MODEL_ENV_BATCH):
            mlflow.models.predict(
                model_uri=str(model_folder),
                input_data=_frame(sheets[start : start + _MODEL_ENV_BATCH]),
                output_path=str(output),
                env_manager=env_manager,
            )
            rows = json.loads(output.read_text())["predictions"]
            answers.extend(list(row["boxes"]) for row in rows)
    return answers


def score_model(model_folder: Path, mltable_folder: Path) -> Evaluation:
    """COCO evaluation of the model on the folder's records (same protocol as training's validation)."""
    sheets = load_sheets(mltable_folder)
    return evaluate(sheets, predict_sheets(model_folder, sheets), class_vocabulary(sheets))
