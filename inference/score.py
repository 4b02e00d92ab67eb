"""The entry script the Azure ML inference server runs for a local deployment (`azmlinfsrv --entry_script`).

It does what Azure ML's scoring for MLflow models does with a no-code deployment: load the MLflow model found under
AZUREML_MODEL_DIR, read the request's `input_data` in pandas' split orient, predict, and answer each row's result.
It runs in the serving environment (`inference/requirements.txt`: the inference server and the model's own
requirements), so it imports nothing of the service, and is not part of the function app.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

model: Any = None


def init() -> None:
    """Load the model once per worker, as the server starts."""
    global model
    root = Path(os.environ["AZUREML_MODEL_DIR"])
    found = sorted(root.rglob("MLmodel"))
    if not found:
        raise FileNotFoundError(f"no MLflow model (MLmodel file) under {root}")
    model = mlflow.pyfunc.load_model(str(found[0].parent))


def run(raw_data: str) -> Any:
    """`{"input_data": {"columns": ["image"], "data": [["<base64>"], ...]}}` to one `{"boxes": [...]}` per image."""
    from azureml_inference_server_http.api.aml_response import AMLResponse

    try:
        frame = _frame(json.loads(raw_data))
    except (ValueError, KeyError, TypeError) as error:
        return AMLResponse({"error": f"the request does not follow the scoring contract: {error}"}, 400)
    result = model.predict(frame)
    return json.loads(result.to_json(orient="records"))


def _frame(payload: dict) -> pd.DataFrame:
    data = payload["input_data"]
    rows = [row if isinstance(row, list) else [row] for row in data["data"]]
    return pd.DataFrame(rows, columns=data["columns"], index=data.get("index"))
