"""Step 5, register model: an MLflow model folder becomes the next version of the registered model.

    python -m pipeline_steps.register_model --model-base-name pid-symbol-detector \
        --model-input-path <MLflow model folder> --model-metadata-path <output folder> \
        [--data-assets-path <register_data_asset output>]

Metrics come from the training run: `metrics.json` beside `MLmodel` (the local trainer), else the
MLflow run named by the MLmodel's `run_id` (AutoML's best child run; inside Azure ML jobs the
platform points MLFLOW_TRACKING_URI at the workspace). An AutoML model also gets the tag
`automl_model_name`: the `base_model_name` AutoML writes into the MLmodel's `metadata` (the trial's
`model_name`, the one its checkpoint holds), which the next run's warm start matches, and the tag
`automl_image`: the AutoML training image it records (`azureml.base_image`), the release of AutoML's
code that scores it (the tag step scores in one pinned release). A local model also gets `val_images`, the
validation sheets its figures were measured on; one trained with none ("0") gets no metric tags at all: it
was not validated, and no figure stands in for that. `model_metadata.json`
in the output holds name, version, mean_average_precision, precision, recall and the data versions
(`contracts.RegisteredModel`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline_steps._cli import StepParser, add_flag, step_parser
from shared.champion.tags import (
    PER_CLASS_TAG,
    REGISTERED_AT_TAG,
    SCORE_TAG,
    TRAIN_DATA_TAG,
    VAL_DATA_TAG,
    VALIDATION_IMAGES_TAG,
)
from shared.contracts import (
    AUTOML_IMAGE_TAG,
    AUTOML_MODEL_NAME_TAG,
    CLASS_IDS_TAG,
    DataAssets,
    RegisteredModel,
    TrainingMetrics,
)
from shared.registry import ModelRegistry, open_registry
from shared.settings import SettingsError, load_registry_location

PRIMARY_METRIC = SCORE_TAG  # AutoML for Images' primary metric names the score tag
REQUIRED_METRICS = (PRIMARY_METRIC, "precision", "recall")
OPTIONAL_METRICS = ("coco_map",)


class ModelInputError(ValueError):
    """The model folder or its metrics cannot be registered; the message says what is wrong."""


def _mlmodel(model_folder: Path) -> dict[str, Any]:
    """The model's MLmodel file as a mapping."""
    mlmodel = model_folder / "MLmodel"
    if not mlmodel.is_file():
        raise ModelInputError(f"{model_folder} is not an MLflow model folder: no MLmodel file")
    description: dict[str, Any] = yaml.safe_load(mlmodel.read_text()) or {}
    return description


def read_training_metrics(model_folder: Path) -> tuple[dict[str, float], str]:
    """(metrics, source run) of the model; every required metric present and a finite number, or none at all
    for a model the local trainer validated on no sheets (it has no figure to record)."""
    return _training_metrics(model_folder, _mlmodel(model_folder), _local_metrics(model_folder))


def _local_metrics(model_folder: Path) -> Any:
    """The local trainer's metrics.json as written (checked where each value is read); None beside an AutoML
    model, which has none."""
    path = model_folder / TrainingMetrics.FILE_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def _training_metrics(
    model_folder: Path, description: dict[str, Any], local_metrics: Any
) -> tuple[dict[str, float], str]:
    run_id = str(description.get("run_id") or "")
    if local_metrics is not None:  # checked field by field below, AutoML's alike
        raw = local_metrics
        source = run_id or "local-trainer"
        if validation_images(local_metrics) == 0:  # older trainers wrote 0.0 here: a figure of nothing
            return {}, source
    elif run_id:
        raw = _tracked_metrics(run_id)
        source = run_id
    else:
        raise ModelInputError(f"{model_folder}: no metrics.json beside MLmodel and no run_id in MLmodel")
    metrics = {}
    for name in REQUIRED_METRICS + OPTIONAL_METRICS:
        if name not in raw:
            if name in REQUIRED_METRICS:
                raise ModelInputError(f"{model_folder}: metric {name!r} is missing from the training run")
            continue
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelInputError(f"{model_folder}: metric {name!r} is not a finite number: {value!r}")
        metrics[name] = float(value)
    return metrics, source


def automl_model_name(description: dict[str, Any]) -> str | None:
    """The AutoML `model_name` the model was trained as (from its MLmodel `description`), or None for a model
    that does not record it.

    AutoML for Images (azureml-automl-dnn-vision 1.62, `common/artifacts_utils.write_artifacts`) logs
    its MLflow model with `metadata={"base_model_name": model_wrapper.model_name, ...}`, the same
    name it saves in the checkpoint (`model.pt`) and compares when a later run loads that checkpoint.
    The local detector writes no such metadata.
    """
    return _metadata(description, "base_model_name")


def automl_image(description: dict[str, Any]) -> str | None:
    """The image AutoML trained the model in, or None: AutoML's run context adds `azureml.base_image` to the
    MLmodel's metadata when ENABLE_METADATA=true, which AutoML's curated training image sets."""
    return _metadata(description, "azureml.base_image")


def _metadata(description: dict[str, Any], key: str) -> str | None:
    metadata = description.get("metadata") or {}
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) and value else None


def _tracked_metrics(run_id: str) -> dict[str, float]:
    """The metrics of the epoch whose weights the model holds, read from the run's metric history.

    A run's summary metrics are the last logged values, not the saved model's: AutoML for Images
    keeps the checkpoint of the epoch with the best validation primary metric
    (mean_average_precision), so that epoch's step is found in the history and every metric is read
    at the same step. A run without history (metrics logged once) gives its summary values.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    client = MlflowClient()
    summary = dict(client.get_run(run_id).data.metrics)
    history = client.get_metric_history(run_id, PRIMARY_METRIC)
    if not history:
        return summary
    best = max(history, key=lambda metric: (metric.value, -metric.step))
    at_best = dict(summary)
    for name in REQUIRED_METRICS + OPTIONAL_METRICS:
        for metric in client.get_metric_history(run_id, name):
            if metric.step == best.step:
                at_best[name] = metric.value
    return at_best


def data_versions(
    data_assets_path: Path | None, train_dataset: str | None = None, val_dataset: str | None = None
) -> dict[str, str]:
    """The training and validation data the model saw: the data-asset step's output, or the reused assets."""
    versions = {TRAIN_DATA_TAG: train_dataset or "", VAL_DATA_TAG: val_dataset or ""}
    if data_assets_path is not None:
        assets = DataAssets.read(data_assets_path)
        for role, entry in (("train", assets.train), ("val", assets.val), ("holdout", assets.holdout)):
            if entry is not None:
                versions[f"{role}_data"] = entry.reference()
                versions[f"{role}_data_uri"] = entry.uri
        if CLASS_IDS_TAG in assets.train.tags:  # what the model can recognise: the submitter's warm-start check
            versions[CLASS_IDS_TAG] = assets.train.tags[CLASS_IDS_TAG]
    return {key: value for key, value in versions.items() if value}


def validation_images(local_metrics: Any) -> int | None:
    """How many validation sheets the local trainer measured the model on (its metrics.json, `_local_metrics`);
    None where it does not say (AutoML)."""
    count = local_metrics.get("val_images") if isinstance(local_metrics, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None


def per_class_ap(local_metrics: Any) -> dict[str, float]:
    """Per-class AP@0.5 from the local trainer's metrics.json, when it recorded it (AutoML's model has none)."""
    if local_metrics is None:
        return {}
    per_class = TrainingMetrics.model_validate(local_metrics).per_class
    return {
        str(class_id): round(float(values["ap50"]), 4)
        for class_id, values in per_class.items()
        if isinstance(values.get("ap50"), (int, float)) and math.isfinite(values["ap50"])
    }


def register(registry: ModelRegistry, name: str, model_folder: Path, data: dict[str, str]) -> RegisteredModel:
    description, local_metrics = _mlmodel(model_folder), _local_metrics(model_folder)
    metrics, source = _training_metrics(model_folder, description, local_metrics)
    per_class = per_class_ap(local_metrics) if metrics else {}
    validated_on = validation_images(local_metrics)
    trained_as, trained_in = automl_model_name(description), automl_image(description)
    # A version that was not validated carries no figures, and VALIDATION_IMAGES_TAG "0" says why.
    tags = {
        **{k: f"{v:.6f}" for k, v in metrics.items()},
        **({VALIDATION_IMAGES_TAG: str(validated_on)} if validated_on is not None else {}),
        **data,
        "source_run": source,
        REGISTERED_AT_TAG: datetime.now(UTC).isoformat(timespec="seconds"),
        **({PER_CLASS_TAG: json.dumps(per_class, separators=(",", ":"))} if per_class else {}),
        **({AUTOML_MODEL_NAME_TAG: trained_as} if trained_as else {}),
        **({AUTOML_IMAGE_TAG: trained_in} if trained_in else {}),
    }
    version = registry.register_model(
        name, model_folder, description="P&ID symbol detector (AutoML for Images contract)", tags=tags
    )
    return RegisteredModel(
        name=version.name,
        version=version.version,
        uri=version.uri,
        mean_average_precision=metrics.get(PRIMARY_METRIC),
        precision=metrics.get("precision"),
        recall=metrics.get("recall"),
        coco_map=metrics.get("coco_map"),
        per_class=per_class,
        val_images=validated_on,
        train_data=data.get("train_data"),
        val_data=data.get("val_data"),
        source_run=source,
    )


def build_parser() -> StepParser:
    parser = step_parser("register_model", __doc__)
    add_flag(parser, "model-base-name")
    add_flag(parser, "model-input-path", required=True, type=Path, help="MLflow model folder (MLmodel at its root)")
    add_flag(parser, "model-metadata-path", required=True, type=Path, help="output folder for model_metadata.json")
    add_flag(parser, "data-assets-path", type=Path, default=None, help="register_data_asset output folder")
    add_flag(parser, "train-dataset", default=None, help="the reused training data asset, when steps 1-3 are skipped")
    add_flag(parser, "val-dataset", default=None, help="the reused validation data asset, when steps 1-3 are skipped")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        metadata = register(
            open_registry(load_registry_location()),
            args.model_base_name,
            args.model_input_path,
            data_versions(args.data_assets_path, args.train_dataset, args.val_dataset),
        )
    except (ModelInputError, SettingsError, FileNotFoundError) as error:
        print(f"register model failed: {error}", file=sys.stderr)
        return 1
    metadata.write(args.model_metadata_path)
    score = metadata.mean_average_precision
    print(
        f"registered {metadata.name} version {metadata.version} "
        + (f"(mAP@0.5 {score:.4f})" if score is not None else "(not validated: no validation figures)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
