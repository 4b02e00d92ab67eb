"""The detector as an MLflow model that follows AutoML for Images' scoring contract.

Input: a DataFrame with a column `image` of base64-encoded image bytes. Output: a DataFrame with a
column `boxes`: per image a list of `{"box": {"topX", "topY", "bottomX", "bottomY"}, "label", "score"}`
with coordinates normalised to [0, 1]. One scoring path then serves local and AutoML models alike.
"""

from __future__ import annotations

import base64
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext
from PIL import Image

import shared
from pipeline_steps.cpu_share import ThreadGovernor
from pipeline_steps.detector.engine import predict
from pipeline_steps.detector.model import ARCHITECTURE, build_detector
from pipeline_steps.evaluation.scoring import IncompatibleModelError

CONFIG_ARTIFACT = "detector_config"
WEIGHTS_ARTIFACT = "detector_weights"


def decode_image(value: str | bytes) -> torch.Tensor:
    """Base64 text (the contract) or raw bytes, to an RGB uint8 tensor (3, H, W).

    Kept as bytes: `predict` converts one tile at a time, so a 7,000 x 5,000 sheet holds 105 MB
    instead of 420 MB of floats.
    """
    data = base64.b64decode(value) if isinstance(value, str) else value
    with Image.open(io.BytesIO(data)) as image:
        array = np.array(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1)


def to_contract(prediction: Any, width: int, height: int) -> list[dict[str, Any]]:
    return [
        {
            "box": {
                "topX": float(box[0]) / width,
                "topY": float(box[1]) / height,
                "bottomX": float(box[2]) / width,
                "bottomY": float(box[3]) / height,
            },
            "label": label,
            "score": float(score),
        }
        for box, score, label in zip(prediction.boxes, prediction.scores, prediction.labels, strict=True)
    ]


class DetectorModel(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        config = json.loads(Path(context.artifacts[CONFIG_ARTIFACT]).read_text())
        if config.get("architecture") != ARCHITECTURE:
            raise IncompatibleModelError(
                f"this model was saved by detector architecture {config.get('architecture')!r}; the code that "
                f"loaded it builds {ARCHITECTURE!r}. Load it with the pipeline_steps version that trained it."
            )
        self.classes = list(config["classes"])
        self.model = build_detector(len(self.classes), score_threshold=config["score_threshold"])
        self.model.load_state_dict(torch.load(context.artifacts[WEIGHTS_ARTIFACT], weights_only=True))
        self.model.eval()
        self.governor = ThreadGovernor(torch.set_num_threads)  # on a shared machine: the free cores, image by image

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        rows = []
        for value in model_input["image"]:
            self.governor.adjust()
            image = decode_image(value)
            _, height, width = image.shape
            rows.append(to_contract(predict(self.model, image, self.classes), width, height))
        return pd.DataFrame({"boxes": rows})


def save_detector(
    output: Path, model: torch.nn.Module, classes: list[str], score_threshold: float, work_dir: Path
) -> None:
    """Write `output` as an MLflow model folder (MLmodel at its root, as AutoML's best_model output is)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work_dir.mkdir(parents=True, exist_ok=True)
    weights, config = work_dir / "weights.pt", work_dir / "config.json"
    torch.save(model.state_dict(), weights)
    config.write_text(
        json.dumps({"classes": classes, "score_threshold": score_threshold, "architecture": ARCHITECTURE})
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        _save(output, weights, config, model_code())


def model_code() -> list[Path]:
    """The packages the model's code travels in: `pipeline_steps` (the detector) and `shared` (the sheets it reads)."""
    return [Path(__file__).resolve().parent.parent, Path(shared.__file__).resolve().parent]


def _save(output: Path, weights: Path, config: Path, code: list[Path]) -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    mlflow.pyfunc.save_model(
        path=str(output),
        python_model=DetectorModel(),
        artifacts={WEIGHTS_ARTIFACT: str(weights), CONFIG_ARTIFACT: str(config)},
        code_paths=[str(folder) for folder in code],
        signature=ModelSignature(inputs=Schema([ColSpec("string", "image")])),
        pip_requirements=model_requirements(),
    )


def model_requirements() -> list[str]:
    """What the saved model declares it needs (an environment that serves it installs these)."""
    return [
        f"torch=={torch.__version__.split('+')[0]}",
        "torchvision",
        "numpy",
        "pillow",
        "pandas<3",
        "faster-coco-eval",
        "tqdm",
        f"mlflow=={mlflow.__version__}",
    ]
