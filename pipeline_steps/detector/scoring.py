"""Score any MLflow model that follows AutoML's contract (local or AutoML) on an MLTable folder."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline_steps.detector.data import Sheet, class_vocabulary, load_sheets
from pipeline_steps.detector.evaluation import Evaluation, Prediction, evaluate

_BATCH = 4


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


def predict_sheets(model: Any, sheets: list[Sheet]) -> list[Prediction]:
    """Predictions through the scoring contract: base64 image bytes in, normalised boxes out."""
    predictions: list[Prediction] = []
    for start in range(0, len(sheets), _BATCH):
        chunk = sheets[start : start + _BATCH]
        frame = pd.DataFrame({"image": [base64.b64encode(s.path.read_bytes()).decode("ascii") for s in chunk]})
        for sheet, boxes in zip(chunk, model.predict(frame)["boxes"], strict=True):
            predictions.append(from_contract(list(boxes), sheet))
    return predictions


def score_model(model_folder: Path, mltable_folder: Path) -> Evaluation:
    """COCO evaluation of the model on the folder's records (same protocol as training's validation)."""
    sheets = load_sheets(mltable_folder)
    return evaluate(sheets, predict_sheets(load_model(model_folder), sheets), class_vocabulary(sheets))
