"""Step 4 on Azure ML: the AutoML for Images object-detection node, built and validated offline.

AUTO_MODE=true lets AutoML choose models and hyperparameters within the limits; AUTO_MODE=false
sweeps `config/config_search_space.yml` (random sampling, Bandit early termination). Search-space
keys are checked against the hyperparameters AutoML accepts: the parameters of the SDK's own
`ImageObjectDetectionSearchSpace`, so the list cannot drift from the installed SDK.

Warm start: AutoML loads a checkpoint only into a trial of the checkpoint's own `model_name`
(`azureml.automl.dnn.vision.common.artifacts_utils.load_model_from_checkpoint` raises otherwise), so
the champion's run seeds only an auto-mode node training the champion's model, never a sweep.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from azure.ai.ml import Input, Output, automl
from azure.ai.ml.automl import ImageObjectDetectionJob, ImageObjectDetectionSearchSpace, ObjectDetectionPrimaryMetrics
from azure.ai.ml.sweep import BanditPolicy, Choice, Uniform

from retrainer.settings import Settings
from shared.contracts import AUTOML_MODEL_NAME_TAG, CLASS_IDS_TAG
from shared.records import ModelVersion

SEARCH_SPACE_FILE = Path(__file__).resolve().parent / "config" / "config_search_space.yml"
TARGET_COLUMN = "label"

#: Every hyperparameter an AutoML object-detection search space may hold.
ACCEPTED_HYPERPARAMETERS: frozenset[str] = frozenset(
    name for name in inspect.signature(ImageObjectDetectionSearchSpace.__init__).parameters if name != "self"
)

_DISTRIBUTIONS = {"choice", "uniform"}


class SearchSpaceError(ValueError):
    """The search space file is invalid; the message names the entry and the key."""


#: Every fixed training parameter the node accepts: the parameters of the SDK's own setter.
ACCEPTED_TRAINING_PARAMETERS: frozenset[str] = frozenset(
    name for name in inspect.signature(ImageObjectDetectionJob.set_training_parameters).parameters if name != "self"
)

#: AutoML's yolov5 supports neither tiling nor min/max size (it takes `image_size`).
_NO_TILING_MODELS = frozenset({"yolov5"})


@dataclass(frozen=True)
class AutoMLConfig:
    compute: str
    timeout_minutes: int
    max_trials: int
    max_concurrent_trials: int
    validation_data_size: float
    auto_mode: bool
    model_name: str = "fasterrcnn_resnet50_fpn"
    #: Small-object settings: tile grid, tile overlap and the model's input size.
    tiling: dict[str, Any] = field(default_factory=dict)
    search_space_file: Path = SEARCH_SPACE_FILE
    #: The champion's AutoML run, to train incrementally from its checkpoint (None: from pretrained weights).
    #: Auto mode only: every trial of a sweep would load it, and the sweep mixes model families.
    checkpoint_run_id: str | None = None

    def __post_init__(self) -> None:
        if self.checkpoint_run_id and not self.auto_mode:
            raise ValueError(
                f"checkpoint run {self.checkpoint_run_id} given to a sweep (AUTO_MODE=false): AutoML would load it "
                "into every trial, and a trial of another model_name fails; warm start is for auto mode only"
            )

    @classmethod
    def from_settings(cls, settings: Settings, checkpoint_run_id: str | None = None) -> AutoMLConfig:
        return cls(
            checkpoint_run_id=checkpoint_run_id,
            compute=settings.TRAINING_GPU_COMPUTE_NAME,
            timeout_minutes=settings.TRAINING_JOB_TIMEOUT_MINUTES,
            max_trials=settings.TRAINING_MAX_TRIALS,
            max_concurrent_trials=settings.TRAINING_CONCURRENT_TRIALS,
            validation_data_size=settings.TRAINING_VALIDATION_DATA_SIZE,
            auto_mode=settings.AUTO_MODE,
            model_name=settings.TRAINING_MODEL_NAME,
            tiling={
                "tile_grid_size": settings.TRAINING_TILE_GRID_SIZE,
                "tile_overlap_ratio": settings.TRAINING_TILE_OVERLAP_RATIO,
                "min_size": settings.TRAINING_MIN_SIZE,
                "max_size": settings.TRAINING_MAX_SIZE,
            },
        )


def load_search_space(path: Path, tiling: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The sweep's search space as SDK distributions, every key checked.

    `tiling` fills in the small-object settings for every family that supports them, where the file
    does not sweep them itself.
    """
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list) or not entries:
        raise SearchSpaceError(f"{path}: expected a non-empty list of model families")
    if tiling:
        entries = [
            {**tiling, **entry}
            if isinstance(entry, dict) and entry.get("model_name") not in _NO_TILING_MODELS
            else entry
            for entry in entries
        ]
    return [_entry(entry, index, path) for index, entry in enumerate(entries)]


def _entry(entry: object, index: int, path: Path) -> dict[str, Any]:
    if not isinstance(entry, dict) or "model_name" not in entry:
        raise SearchSpaceError(f"{path}: entry {index} must be a mapping with a model_name")
    converted: dict[str, Any] = {}
    for key, value in entry.items():
        if key not in ACCEPTED_HYPERPARAMETERS:
            raise SearchSpaceError(
                f"{path}: entry {index} ({entry['model_name']}): unknown hyperparameter {key!r}; "
                f"AutoML accepts: {', '.join(sorted(ACCEPTED_HYPERPARAMETERS))}"
            )
        converted[key] = _distribution(value, key, index, path)
    return converted


def _distribution(value: object, key: str, index: int, path: Path) -> Any:
    if not isinstance(value, dict):
        return Choice([cast(Any, value)])
    kind = value.get("type")
    if kind not in _DISTRIBUTIONS:
        raise SearchSpaceError(f"{path}: entry {index}: {key}: type must be one of {sorted(_DISTRIBUTIONS)}")
    if kind == "choice":
        return Choice(list(value["values"]))
    return Uniform(min_value=float(value["min_value"]), max_value=float(value["max_value"]))


def build_automl_node(
    config: AutoMLConfig, training_data: Input, validation_data: Input | None = None
) -> ImageObjectDetectionJob:
    """The AutoML node; with no validation data AutoML holds out `validation_data_size` of training."""
    node = automl.image_object_detection(
        compute=config.compute,
        training_data=training_data,
        validation_data=validation_data,
        validation_data_size=None if validation_data is not None else config.validation_data_size,
        target_column_name=TARGET_COLUMN,
        primary_metric=ObjectDetectionPrimaryMetrics.MEAN_AVERAGE_PRECISION,
        outputs={"best_model": Output(type="mlflow_model")},
    )
    # A fixed model with no search space is one trial: more trials without a search space switch
    # AutoML into its AutoMode (preview), which is not what a fixed model asks for.
    trials = (config.max_trials, config.max_concurrent_trials) if not config.auto_mode else (1, 1)
    node.set_limits(timeout_minutes=config.timeout_minutes, max_trials=trials[0], max_concurrent_trials=trials[1])
    if config.auto_mode:
        parameters: dict[str, Any] = {"model_name": config.model_name}
        if config.model_name not in _NO_TILING_MODELS:
            parameters.update(config.tiling)
        if config.checkpoint_run_id:
            parameters["checkpoint_run_id"] = config.checkpoint_run_id
        unknown = sorted(set(parameters) - ACCEPTED_TRAINING_PARAMETERS)
        if unknown:
            raise SearchSpaceError(f"unknown AutoML training parameters: {', '.join(unknown)}")
        node.set_training_parameters(**parameters)
    else:
        node.extend_search_space(load_search_space(config.search_space_file, config.tiling))
        node.set_sweep(
            sampling_algorithm="random",
            early_termination=BanditPolicy(evaluation_interval=2, slack_factor=0.2, delay_evaluation=6),
        )
    return node


@dataclass(frozen=True)
class WarmStartDecision:
    """Whether the AutoML node starts from the champion's checkpoint, and why (recorded on the job)."""

    checkpoint_run_id: str | None
    reason: str


def champion_checkpoint(
    versions: list[ModelVersion],
    class_ids: frozenset[str] | None,
    *,
    enabled: bool,
    auto_mode: bool,
    model_name: str,
) -> WarmStartDecision:
    """The champion's AutoML run when it can seed this training: auto mode, an AutoML champion of the
    model AutoML will train (`model_name`), and one that knew every class.

    AutoML restores the checkpoint's whole network, its class head included, so the class set must
    match: the label map (every class the service accepts) must be the champion's classes. It loads
    a checkpoint only into a trial of the same model_name and raises otherwise, so a sweep, whose
    trials mix model families, never gets one.
    """
    if not enabled:
        return WarmStartDecision(None, "warm start is off (WARM_START=false): training from pretrained weights")
    if not auto_mode:
        return WarmStartDecision(
            None,
            "a sweep (AUTO_MODE=false) mixes model families and AutoML loads a checkpoint only into a trial of "
            "its own model: training from pretrained weights",
        )
    champion = next((v for v in versions if v.is_best), None)
    if champion is None:
        return WarmStartDecision(None, "no champion yet: training from pretrained weights")
    run = champion.tags.get("source_run", "")
    if not run or run == "local-trainer":
        return WarmStartDecision(None, f"champion version {champion.version} has no AutoML run to start from")
    trained = champion.tags.get(CLASS_IDS_TAG)
    if trained is None or class_ids is None:
        missing = "the champion's classes" if trained is None else "the label map"
        return WarmStartDecision(None, f"{missing} unknown, so the class set cannot be checked: training afresh")
    known = frozenset(json.loads(trained))
    if known != class_ids:
        added, gone = sorted(class_ids - known), sorted(known - class_ids)
        return WarmStartDecision(
            None, f"the class set changed (new {added or 'none'}, gone {gone or 'none'}): training afresh"
        )
    champion_model = champion.tags.get(AUTOML_MODEL_NAME_TAG)
    if not champion_model:
        return WarmStartDecision(
            None,
            f"champion version {champion.version} has no {AUTOML_MODEL_NAME_TAG} tag (registered before it was "
            "recorded), so its model cannot be matched to the one AutoML trains: training from pretrained weights",
        )
    if champion_model != model_name:
        return WarmStartDecision(
            None,
            f"champion version {champion.version} is a {champion_model} but AutoML trains {model_name} "
            "(TRAINING_MODEL_NAME), and a checkpoint loads only into its own model: training from pretrained weights",
        )
    return WarmStartDecision(
        run, f"warm start from champion version {champion.version} ({champion_model}, AutoML run {run})"
    )
