"""What the pipeline steps hand each other across process boundaries, one typed model per file.

Each model owns its file name: the writing step calls `write(folder)` and the reading step
`read(folder)`, so no step opens another step's file by a literal name.
"""

from __future__ import annotations

import enum
import hashlib
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared.champion.tags import CLASS_IDS_TAG as CLASS_IDS_TAG  # defined with the registry's other tags
from shared.promotion import HoldoutInfo
from shared.step_file import StepFile

#: The model tag naming the AutoML model (`model_name`, e.g. fasterrcnn_resnet50_fpn) an AutoML model is;
#: a checkpoint seeds only that model. Absent on the local detector's models.
AUTOML_MODEL_NAME_TAG = "automl_model_name"
#: The AutoML image a model was trained in (its MLmodel's `azureml.base_image`): the AutoML release whose code
#: scores it. The tag step's image is pinned to one release (components/scoring.Dockerfile).
AUTOML_IMAGE_TAG = "automl_image"


class SplitSide(enum.StrEnum):
    """Where an image belongs, for good: training, validation (early stopping, model selection) or holdout."""

    TRAIN = "train"
    VAL = "val"
    HOLDOUT = "holdout"


class SplitAssignment(BaseModel):
    """Every image's side, as decided once and kept in every later run (a versioned registry document).

    Images are found by name first; a known sheet under a new name is found by its fingerprint
    (size and boxes), so a renamed copy lands on the side of the original.
    """

    model_config = ConfigDict(extra="ignore")

    version: int = 0
    by_name: dict[str, SplitSide] = Field(default_factory=dict)
    by_fingerprint: dict[str, SplitSide] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_bytes(cls, content: bytes) -> SplitAssignment:
        return cls.model_validate_json(content)


def holdout_info(assignment_version: int, image_names: list[str]) -> HoldoutInfo:
    """The holdout's version: which assignment, how many images, and a digest of their names."""
    digest = hashlib.sha256("\n".join(sorted(image_names)).encode("utf-8")).hexdigest()[:16]
    return HoldoutInfo(assignment_version=assignment_version, images=len(image_names), digest=digest)


class SplitReport(StepFile):
    """The split step's account of what it did (beside the training MLTable)."""

    FILE_NAME: ClassVar[str] = "split_report.json"

    assignment_version: int
    holdout: HoldoutInfo
    counts: dict[SplitSide, dict[str, int]]
    per_class: dict[str, dict[str, int]]
    newly_assigned: int
    moved_by_mandatory_lists: list[str] = Field(default_factory=list)
    mandatory_not_found: list[str] = Field(default_factory=list)
    rare_classes: list[str] = Field(default_factory=list)
    rare_class_policy: str = "train_only"
    images_in_train_and_val: list[str] = Field(default_factory=list)
    conflicting_copies: list[str] = Field(default_factory=list)


class HoldoutManifest(StepFile):
    """Beside the holdout MLTable: which version of the holdout it is, for every decision taken on it."""

    FILE_NAME: ClassVar[str] = "holdout.json"

    holdout: HoldoutInfo


class DataAssetEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    version: str
    uri: str  # azureml:<name>:<version> on Azure ML; a file:// URL of the stored copy locally
    tags: dict[str, str] = Field(default_factory=dict)

    def reference(self) -> str:
        return f"{self.name}:{self.version}"


class DataAssets(StepFile):
    """The data-asset step's output: the registered sets (None where a set was empty)."""

    FILE_NAME: ClassVar[str] = "data_assets.json"

    train: DataAssetEntry
    val: DataAssetEntry | None = None
    holdout: DataAssetEntry | None = None


class RegisteredModel(StepFile):
    """The register-model step's output: the new version with its training metrics and data versions.
    A version the local trainer could not validate (`val_images` 0) has no figures: they are None."""

    FILE_NAME: ClassVar[str] = "model_metadata.json"

    name: str
    version: str
    uri: str
    mean_average_precision: float | None
    precision: float | None
    recall: float | None
    coco_map: float | None = None
    per_class: dict[str, float] = Field(default_factory=dict)
    #: Validation images the figures were measured on; None where the trainer does not say (AutoML).
    val_images: int | None = None
    train_data: str | None = None
    val_data: str | None = None
    source_run: str = ""


class TrainingMetrics(StepFile):
    """What the local trainer writes beside its MLflow model, and registration reads (an AutoML model has
    none: its metrics are on its run). Scores are checked where they are read, so a NaN is named there.
    With no validation sheets (`val_images` 0) nothing was measured: the figures are None, never 0."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")
    FILE_NAME: ClassVar[str] = "metrics.json"

    mean_average_precision: float | None
    precision: float | None
    recall: float | None
    coco_map: float | None = None
    per_class: dict[str, dict[str, float]] = Field(default_factory=dict)
    classes: list[str] = Field(default_factory=list)
    train_images: int = 0
    val_images: int = 0
    best_epoch: int | None = None
    epochs: int | None = None
    planned_epochs: int | None = None
    budget_cut: bool = False
    warm_start: str | None = None
    warm_start_skipped: str | None = None
    training_seconds: float | None = None
    seconds: float | None = None
    seed: int | None = None
    architecture: str | None = None
    report: str | None = None
