"""The pipeline and its training: computes, AutoML, the split and holdout, data assets, the local trainer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from shared.settings.checks import SETTINGS_CONFIG


class TrainingSettings(BaseSettings):
    """What a run builds and trains: its computes, AutoML's search, the split, the assets, the local trainer."""

    model_config = SETTINGS_CONFIG

    # Pipeline and training: the original pipeline's names; CPU steps on cpu-cluster, AutoML on gpu-cluster.
    PIPELINE_CPU_COMPUTE_NAME: str = Field(default="cpu-cluster", description="Azure ML compute of the CPU steps.")
    TRAINING_GPU_COMPUTE_NAME: str = Field(
        default="gpu-cluster", description="Azure ML compute of the AutoML training."
    )
    TRAINING_JOB_TIMEOUT_MINUTES: int = Field(default=180, gt=0, description="Minutes the AutoML training job may run.")
    TRAINING_MAX_TRIALS: int = Field(
        default=8, gt=0, description="AutoML trials of a sweep (AUTO_MODE=false); a fixed model is one trial."
    )
    TRAINING_CONCURRENT_TRIALS: int = Field(default=4, gt=0, description="AutoML trials of a sweep run at once.")
    TRAINING_VALIDATION_DATA_SIZE: float = Field(
        default=0.2, gt=0, lt=1, description="Share of training data AutoML holds out when no validation set is given."
    )
    AUTO_MODE: bool = Field(
        default=True,
        description="true: AutoML trains one fixed model, TRAINING_MODEL_NAME; false: it sweeps "
        "config/config_search_space.yml.",
    )
    TRAIN_DATASET: str | None = Field(default=None, description="Reuse this training data asset (skips steps 1-3).")
    VAL_DATASET: str | None = Field(default=None, description="Reuse this validation data asset (skips steps 1-3).")
    DATASET_VERSION_PATH: str | None = Field(
        default=None, description="Data asset step output of the reused assets, for the model's tags."
    )
    USE_STRATIFIED_SPLIT: bool = Field(
        default=True,
        description="Split into training and validation sets; false: no validation set, AutoML holds out its own.",
    )
    STRATIFIED_SPLIT_N_FOLD: int = Field(default=5, ge=2, description="Folds of the split; one of them is validation.")
    MANDATORY_TRAIN_FILENAMES: str = Field(default="", description="Images forced into training, ';'-separated.")
    MANDATORY_VAL_FILENAMES: str = Field(default="", description="Images forced into validation, ';'-separated.")
    HOLDOUT_FRACTION: float = Field(
        default=0.2,
        ge=0,
        lt=0.9,
        description="Share of images kept for good to compare models on; nothing trains on them.",
    )
    HOLDOUT_MIN_IMAGES_PER_CLASS: int = Field(
        default=2, ge=0, description="Holdout images of each class at least, where the class has enough images."
    )
    RARE_CLASS_POLICY: Literal["train_only", "copy"] = Field(
        default="train_only",
        description="Images of classes with fewer images than folds: train_only, or copy (their training images "
        "also validate).",
    )
    SPLIT_ASSIGNMENT_NAME: str = Field(
        default="pid-symbols-split-assignment",
        description="Registry document that keeps every image's side (training, validation, holdout) for good.",
    )
    # Not `workspaceblobstore`: that is the workspace's own system container, not the service's. infra/
    # registers a datastore of this name over STORAGE_ACCOUNT_CONTAINER_NAME (identity-based, no key).
    DATA_STORE_NAME: str = Field(
        default="retraining_data",
        pattern=r"^[A-Za-z0-9_]{1,255}$",
        description="Azure ML datastore over the service's container, which the pipeline reads (not "
        "workspaceblobstore).",
    )
    # AutoML for Images shrinks each image to the model's input size; 15-100 px symbols on a
    # 7,000 x 4,500 px sheet would become a few pixels. Tiling cuts the sheet into a grid first: with
    # 6x4 tiles of 25% overlap a tile is about 1,470 x 1,380 px, which 1,200-1,600 px inputs keep at
    # 0.87x or more, so a 15 px symbol stays about 13 px. Tiling and min/max size are not supported by
    # yolov5, so auto mode trains TRAINING_MODEL_NAME; in sweep mode they go to every other family.
    TRAINING_TILE_GRID_SIZE: str = Field(
        default="6x4",
        pattern=r"^[1-9][0-9]*x[1-9][0-9]*$",
        description="AutoML small-object tiling: the grid, columns x rows.",
    )
    TRAINING_TILE_OVERLAP_RATIO: float = Field(
        default=0.25, ge=0, lt=1, description="Overlap of adjacent AutoML tiles, a share of a tile."
    )
    TRAINING_MIN_SIZE: int = Field(default=1200, gt=0, description="AutoML model input: the shorter side, in px.")
    TRAINING_MAX_SIZE: int = Field(
        default=1600, gt=0, description="AutoML model input: the longer side at most, in px."
    )
    TRAINING_MODEL_NAME: str = Field(
        default="fasterrcnn_resnet50_fpn",
        description="The model AutoML trains in auto mode (one that supports tiling).",
    )
    PIPELINE_COMPONENTS: Literal["registered", "local"] = Field(
        default="registered",
        description="registered: submissions reference this release's registered components and upload nothing; "
        "local: build them from the YAML files and upload the code.",
    )
    INPUT_IMAGE_DATA_PATH: str | None = Field(
        default=None, description="Image folder as an Azure ML path; default: the datastore's IMAGE_FOLDER."
    )
    INPUT_LABEL_DATA_PATH: str | None = Field(
        default=None, description="Label folder as an Azure ML path; default: the datastore's LABEL_FOLDER."
    )
    EXPERIMENT_NAME: str = Field(
        default="pid-symbol-retraining", description="Azure ML experiment the runs are filed under."
    )
    MODEL_BASE_NAME: str = Field(default="pid-symbol-detector", description="Name the models are registered under.")
    LOCAL_TRAINING_MINUTES: float = Field(
        default=15.0,
        gt=0,
        description="Minutes the local trainer may train; reported when the cap cuts training short.",
    )
    LOCAL_TRAINING_EPOCHS: int = Field(default=60, ge=1, description="Epochs the local trainer runs from scratch.")
    LOCAL_WARM_START_EPOCHS: int = Field(
        default=20, ge=1, description="Epochs the local trainer runs when it starts from the champion's weights."
    )
    WARM_START: bool = Field(
        default=True,
        description="Retrain from the champion: its weights locally, its AutoML run as checkpoint_run_id on Azure ML "
        "when it is the same model and knew every class.",
    )

    def reuses_datasets(self) -> bool:
        return bool(self.TRAIN_DATASET and self.VAL_DATASET)
