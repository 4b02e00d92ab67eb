"""One typed settings object, read from environment variables and validated on first use.

The variable names are the ones users of the original pipeline already set (STORAGE_ACCOUNT_CONNECTION_STRING,
STORAGE_ACCOUNT_CONTAINER_NAME, ...). Secrets are `SecretStr`, so they print as '**********'
wherever the settings object is shown or logged.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import annotated_types
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_FOLDER_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


#: What a run needs beyond training and scoring: queueing, cluster provisioning, the first build of the
#: steps' image, and the data and registry steps (minutes; a margin, not a measurement).
PIPELINE_OVERHEAD_MINUTES = 120

_Model = TypeVar("_Model", bound=BaseSettings)


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the environment variable."""


@dataclass(frozen=True)
class Bound:
    """A numeric setting's range, declared once, on its field below: the service checks it at start, and the steps'
    CLIs and checks and the component YAML take it from here (`setting_bound`), so a value the service accepts is
    never one a step refuses after the run has trained."""

    setting: str
    kind: type[int] | type[float]
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True
    #: Infinity and NaN refused (`allow_inf_nan=False` on the field, or a range closed on both sides).
    finite: bool = False

    def admits(self, value: float) -> bool:
        if self.finite and not math.isfinite(value):
            return False
        if self.low is not None and not (value >= self.low if self.low_inclusive else value > self.low):
            return False
        return self.high is None or bool(value <= self.high if self.high_inclusive else value < self.high)

    def describe(self) -> str:
        """'a finite number in [0, 1)', 'a whole number of at least 2', 'a finite number above 0', ..."""
        what = "a whole number" if self.kind is int else f"a{' finite' if self.finite else ''} number"
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"{what} in {'[' if self.low_inclusive else '('}{low}, {high}{']' if self.high_inclusive else ')'}"
        if self.low is not None:
            return f"{what} {'of at least' if self.low_inclusive else 'above'} {low}"
        if self.high is not None:
            return f"{what} {'of at most' if self.high_inclusive else 'below'} {high}"
        return what

    def check(self, value: float) -> float:
        """The value, or ValueError naming the setting and its range."""
        if not self.admits(value):
            raise ValueError(f"{self.setting} must be {self.describe()}, got {value}")
        return value


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def setting_bound(name: str) -> Bound:
    """The range declared on the settings field `name` (an int or float field)."""
    field = Settings.model_fields[name]
    kinds: dict[object, type[int] | type[float]] = {int: int, float: float}
    if field.annotation not in kinds:
        raise TypeError(f"{name} is not a number setting")
    kind = kinds[field.annotation]
    low: float | None = None
    high: float | None = None
    low_inclusive = high_inclusive = True
    finite = False
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low_inclusive = isinstance(item, annotated_types.Ge)
            low = float(item.ge if isinstance(item, annotated_types.Ge) else item.gt)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Le | annotated_types.Lt):
            high_inclusive = isinstance(item, annotated_types.Le)
            high = float(item.le if isinstance(item, annotated_types.Le) else item.lt)  # type: ignore[arg-type]
        elif getattr(item, "allow_inf_nan", True) is False:
            finite = True
    # A closed range holds no infinity, and NaN fails every comparison.
    finite = finite or (low is not None and high is not None)
    return Bound(name, kind, low, low_inclusive, high, high_inclusive, finite)


@dataclass(frozen=True)
class StorageConnection:
    """The datastore account: a connection string, or endpoints and an identity (keyless)."""

    connection_string: str | None
    blob_service_uri: str | None
    table_service_uri: str | None
    client_id: str | None

    def __repr__(self) -> str:  # a connection string holds the account key
        kind = "connection string" if self.connection_string else f"identity at {self.blob_service_uri}"
        return f"StorageConnection({kind})"


class RegistryLocation(BaseSettings):
    """Where the model registry is, and who signs in to it: what a pipeline step reads, and nothing else.

    Six fields of the service settings (`Settings` is a RegistryLocation), read from the same variables; a
    step builds this alone (`load_registry_location`), so the rest of the service configuration never
    reaches a step, which takes its behaviour from its component inputs.
    """

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    WORKSPACE_BACKEND: Literal["auto", "azureml", "local"] = Field(
        default="auto",
        description="Where pipelines, data assets and models live: azureml, local, or auto "
        "(azureml when the three workspace variables are set).",
    )
    # Inside an Azure ML job the platform sets AZUREML_ARM_*: steps find their own workspace with no extra setting.
    AZURE_SUBSCRIPTION_ID: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AZURE_SUBSCRIPTION_ID", "AZUREML_ARM_SUBSCRIPTION"),
        description="Subscription of the Azure ML workspace (in an Azure ML job the platform sets the second).",
    )
    AZURE_RESOURCE_GROUP: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AZURE_RESOURCE_GROUP", "AZUREML_ARM_RESOURCEGROUP"),
        description="Resource group of the Azure ML workspace (in an Azure ML job the platform sets the second).",
    )
    AZUREML_WORKSPACE_NAME: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AZUREML_WORKSPACE_NAME", "AZUREML_ARM_WORKSPACE_NAME"),
        description="Name of the Azure ML workspace (in an Azure ML job the platform sets the second).",
    )
    LOCAL_WORKSPACE_DIR: Path = Field(
        default=Path(".workspace"),
        description="Folder of the local backend: data assets, runs, MLflow registry (mlflow.db), models.",
    )
    # Who signs in to the workspace from a compute (retrainer/identity.py); unset, the default identity.
    DEFAULT_IDENTITY_CLIENT_ID: str | None = Field(
        default=None,
        description="Client id of the managed identity of an Azure ML compute (the platform sets it in jobs).",
    )

    def backend(self) -> Literal["azureml", "local"]:
        """The workspace backend: as set, or azureml when all three workspace variables are set."""
        if self.WORKSPACE_BACKEND != "auto":
            if self.WORKSPACE_BACKEND == "azureml":
                self.azureml_workspace()
            return self.WORKSPACE_BACKEND
        return "azureml" if all(self._workspace_fields().values()) else "local"

    def names_a_workspace(self) -> bool:
        """True when all three workspace variables are set."""
        return all(self._workspace_fields().values())

    def azureml_workspace(self) -> tuple[str, str, str]:
        """(subscription, resource group, workspace); SettingsError naming whatever is missing."""
        fields = self._workspace_fields()
        missing = [name for name, value in fields.items() if not value]
        if missing:
            raise SettingsError(f"invalid configuration: {', '.join(missing)} not set (needed for the azureml backend)")
        subscription, resource_group, workspace = (str(value) for value in fields.values())
        return subscription, resource_group, workspace

    def _workspace_fields(self) -> dict[str, str | None]:
        return {
            "AZURE_SUBSCRIPTION_ID": self.AZURE_SUBSCRIPTION_ID,
            "AZURE_RESOURCE_GROUP": self.AZURE_RESOURCE_GROUP,
            "AZUREML_WORKSPACE_NAME": self.AZUREML_WORKSPACE_NAME,
        }


class Settings(RegistryLocation):
    """Service configuration; each field reads the environment variable of its upper-case name."""

    # The datastore connection, named DATASTORE as the blob trigger's `connection`: either Azure
    # Functions' identity-based form (DATASTORE__blobServiceUri, ...: no key anywhere) or a connection
    # string (DATASTORE, or STORAGE_ACCOUNT_CONNECTION_STRING as the original pipeline named it).
    STORAGE_ACCOUNT_CONNECTION_STRING: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STORAGE_ACCOUNT_CONNECTION_STRING", "DATASTORE"),
        description="Connection string of the datastore's storage account (Azurite, or users who want keys). "
        "This or the keyless DATASTORE__blobServiceUri and DATASTORE__tableServiceUri: one of the two is required.",
    )
    DATASTORE_BLOB_SERVICE_URI: str | None = Field(
        default=None,
        validation_alias="DATASTORE__blobServiceUri",
        pattern=r"^https://",
        description="Keyless (how Azure runs it): the datastore account's blob endpoint, "
        "https://<account>.blob.core.windows.net, signed in with DefaultAzureCredential (the managed identity).",
    )
    DATASTORE_QUEUE_SERVICE_URI: str | None = Field(
        default=None,
        validation_alias="DATASTORE__queueServiceUri",
        pattern=r"^https://",
        description="Keyless: the datastore account's queue endpoint (the Functions host's blob trigger needs it).",
    )
    DATASTORE_TABLE_SERVICE_URI: str | None = Field(
        default=None,
        validation_alias="DATASTORE__tableServiceUri",
        pattern=r"^https://",
        description="Keyless: the datastore account's table endpoint, the ledger's; required with the blob one.",
    )
    DATASTORE_CLIENT_ID: str | None = Field(
        default=None,
        validation_alias="DATASTORE__clientId",
        description="Keyless: client id of a user-assigned identity; unset, the default identity signs in. Set it only "
        "together with DATASTORE__credential=managedidentity (read by the Functions host), or the blob trigger signs "
        "in as the system identity while the code uses the user-assigned one.",
    )
    STORAGE_ACCOUNT_CONTAINER_NAME: str = Field(
        default="data",
        description="Blob container that holds images, labels, quarantine and the promoted model's record.",
    )
    IMAGE_FOLDER: str = Field(default="data/images", description="Folder of the images in the container.")
    LABEL_FOLDER: str = Field(
        default="data/labels", description="Folder of the .npy labels and their converted .jsonl."
    )
    QUARANTINE_FOLDER: str = Field(
        default="quarantine", description="Where invalid files are moved, each with a reason beside it."
    )
    LABEL_MAP_BLOB: str = Field(
        default="data/label_map.json",
        description="Blob mapping class id to <Instrument|Piping|Equipment>/<Subcategory>/<Label>; "
        "when absent, class ids are not checked.",
    )
    LEDGER_TABLE_PREFIX: str = Field(
        default="retrain", description="Prefix of the Table Storage tables that hold the service state."
    )
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
        description="Azure ML datastore registered over the service's container, which the pipeline reads "
        "(not workspaceblobstore, the workspace's own).",
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
        description="registered: submissions reference the components `retrain register-components` registered "
        "for this release and upload nothing; local: build them from the YAML files and upload the code.",
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
    MIN_MAP_IMPROVEMENT: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        description="How much a new model's mAP@0.5 must beat the best one's to be promoted: "
        "the lower bound of the interval must clear it.",
    )
    PROMOTION_CONFIDENCE_LEVEL: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Confidence of the paired bootstrap interval on the challenger's mAP minus the champion's, "
        "on the holdout.",
    )
    PROMOTION_BOOTSTRAP_RESAMPLES: int = Field(
        default=1000, ge=100, description="Paired bootstrap resamples of the holdout images."
    )
    # Scoring is bounded twice, so a holdout that only grows never pushes a run past its deadline:
    # by images (a seeded sample, the same run after run) and by minutes.
    PROMOTION_MAX_HOLDOUT_IMAGES: int = Field(
        default=200,
        ge=1,
        description="Holdout images a decision scores at most: a fixed seeded sample, the same from run to run.",
    )
    PROMOTION_SCORING_MINUTES: float = Field(
        default=60,
        gt=0,
        allow_inf_nan=False,
        description="Minutes the tag step may spend scoring both models, from its start (reading the holdout and "
        "fetching both models included); past them it decides on the images both models scored.",
    )
    PROMOTION_MIN_HOLDOUT_IMAGES: int = Field(
        default=10,
        ge=1,
        description="Holdout images both models must have scored for a promotion; fewer, and the champion stays.",
    )
    MIN_CLASS_INSTANCES: int = Field(
        default=20,
        ge=1,
        description="Symbols of a class on the scored holdout images for the per-class guard to watch it.",
    )
    MAX_CLASS_AP_DROP: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="AP@0.5 a watched class may lose, beyond doubt, before a challenger that is better overall is "
        "kept out and the champion stays.",
    )
    PROMOTION_COMPUTE_NAME: str | None = Field(
        default=None,
        description="Compute of the tag step, which scores both models; unset: TRAINING_GPU_COMPUTE_NAME "
        "(AutoML's model uses CUDA when present, and a CPU takes minutes a sheet).",
    )
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

    # The event-driven service.
    RETRAIN_MIN_NEW_IMAGES: int = Field(default=20, ge=1, description="New images that make a batch due.")
    RETRAIN_QUIET_MINUTES: float = Field(
        default=10, ge=0, description="Minutes without a new image before a batch is due."
    )
    RETRAIN_MAX_WAIT_MINUTES: float = Field(
        default=24 * 60, gt=0, description="A pending image waits at most this long, however few arrived."
    )
    RETRAIN_MAX_ACTIVE_RUNS: int = Field(default=1, ge=1, description="Runs in flight at once (1: single flight).")
    RETRAIN_MAX_FORCED_RUNS: int = Field(
        default=1,
        ge=0,
        description="Runs that `force` may start beyond RETRAIN_MAX_ACTIVE_RUNS (each one is a GPU run).",
    )
    RETRAIN_RUN_TIMEOUT_MINUTES: float | None = Field(
        default=None,
        gt=0,
        description="An active run with no result by then is canceled and failed; its images are pending again. "
        f"Unset: TRAINING_JOB_TIMEOUT_MINUTES + PROMOTION_SCORING_MINUTES + {PIPELINE_OVERHEAD_MINUTES} "
        "(queueing, provisioning, image builds and the data steps).",
    )
    RETRAIN_MAX_CONSECUTIVE_FAILURES: int = Field(
        default=3, ge=1, description="Failed runs in a row after which automatic submission pauses."
    )
    RETRAIN_BACKOFF_MINUTES: float = Field(
        default=15, ge=0, description="Minutes to wait after a failed run; doubles with each failure in a row."
    )
    MONITOR_SCHEDULE: str = Field(default="0 */5 * * * *", description="NCRONTAB schedule of the monitor timer.")
    EVENTGRID_TOPIC_ENDPOINT: str | None = Field(
        default=None, description="Event Grid topic that ModelPromoted events are sent to; unset, none are sent."
    )
    EVENTGRID_TOPIC_KEY: SecretStr | None = Field(
        default=None, description="Access key of that topic; without it the function's identity is used."
    )
    APPLICATIONINSIGHTS_CONNECTION_STRING: str | None = Field(
        default=None,
        description="Application Insights (set by the platform): logs, traces and metrics go there, with Entra auth.",
    )
    BEST_MODEL_BLOB: str = Field(default="models/best_model.json", description="Blob of the promoted model's record.")

    # Serving: an endpoint that follows the champion (retrainer/serving/).
    SERVING_ENDPOINT_NAME: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$",
        description="Azure ML managed online endpoint that serves the champion (3-32 letters, digits, hyphens); "
        "unset, nothing is deployed on Azure ML. Locally `retrain serve` serves the champion whatever it says.",
    )
    SERVING_INSTANCE_TYPE: str = Field(
        default="Standard_DS3_v2",
        description="VM size of the endpoint's deployments (CPU, as Microsoft's AutoML object detection sample; a GPU "
        "size such as Standard_NC4as_T4_v3 for tiled sheets at full resolution).",
    )
    SERVING_INSTANCE_COUNT: int = Field(default=1, ge=1, le=20, description="Instances of each deployment.")
    SERVING_CANARY_PERCENT: int = Field(
        default=0,
        ge=0,
        le=99,
        description="Traffic share a new champion's deployment gets first, for SERVING_CANARY_MINUTES, before all "
        "of it (0: all at once after its smoke test).",
    )
    SERVING_CANARY_MINUTES: float = Field(
        default=30, gt=0, description="How long a canary share runs before the new deployment takes all traffic."
    )
    SERVING_SMOKE_SHEETS: int = Field(
        default=3, ge=1, le=20, description="Holdout sheets a new deployment scores before it takes traffic."
    )
    SERVING_SMOKE_TOLERANCE: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="How far below the champion's holdout mAP@0.5 the smoke sheets' mAP@0.5 may fall (a few sheets "
        "vary a lot: this catches a broken deployment, not a slightly worse one).",
    )
    SERVING_RETRY_MINUTES: float = Field(
        default=15, gt=0, description="Back-off after a failed deployment or smoke test; doubles per failure, to 8x."
    )
    LOCAL_SERVING_ENVIRONMENT: Path = Field(
        default=Path(".venv-serving"),
        description="Virtual environment of the local endpoint's inference server (`make setup-serving` makes it).",
    )
    SERVING_STATUS_BLOB: str = Field(
        default="models/serving.json", description="Blob of what serves the champion: endpoint, version, state."
    )

    def run_timeout_minutes(self) -> float:
        """How long a run may take: as set, or training's timeout plus scoring's budget plus the other steps."""
        if self.RETRAIN_RUN_TIMEOUT_MINUTES is not None:
            return self.RETRAIN_RUN_TIMEOUT_MINUTES
        return self.TRAINING_JOB_TIMEOUT_MINUTES + self.PROMOTION_SCORING_MINUTES + PIPELINE_OVERHEAD_MINUTES

    def promotion_compute(self) -> str:
        """Where the tag step runs: the GPU compute unless PROMOTION_COMPUTE_NAME says otherwise."""
        return self.PROMOTION_COMPUTE_NAME or self.TRAINING_GPU_COMPUTE_NAME

    def image_data_path(self) -> str:
        return self.INPUT_IMAGE_DATA_PATH or f"azureml://datastores/{self.DATA_STORE_NAME}/paths/{self.IMAGE_FOLDER}"

    def label_map_path(self) -> str:
        return f"azureml://datastores/{self.DATA_STORE_NAME}/paths/{self.LABEL_MAP_BLOB}"

    def label_data_path(self) -> str:
        return self.INPUT_LABEL_DATA_PATH or f"azureml://datastores/{self.DATA_STORE_NAME}/paths/{self.LABEL_FOLDER}"

    def images_absolute_prefix(self) -> str:
        """The long azureml:// image folder AutoML needs in image_url (aggregation's absolute-path input)."""
        subscription, resource_group, workspace = self.azureml_workspace()
        return (
            f"azureml://subscriptions/{subscription}/resourcegroups/{resource_group}/workspaces/{workspace}"
            f"/datastores/{self.DATA_STORE_NAME}/paths/{self.IMAGE_FOLDER}"
        )

    def reuses_datasets(self) -> bool:
        return bool(self.TRAIN_DATASET and self.VAL_DATASET)

    def storage_configured(self) -> bool:
        """Whether a datastore account is configured (by identity or connection string)."""
        return bool(self.DATASTORE_BLOB_SERVICE_URI or self.STORAGE_ACCOUNT_CONNECTION_STRING)

    def storage_connection(self) -> StorageConnection:
        """How to reach the datastore: by identity when DATASTORE__blobServiceUri is set, else by connection string."""
        if self.DATASTORE_BLOB_SERVICE_URI:
            if not self.DATASTORE_TABLE_SERVICE_URI:
                raise SettingsError(
                    "invalid configuration: DATASTORE__tableServiceUri is not set (the ledger's tables; "
                    "needed with DATASTORE__blobServiceUri)"
                )
            return StorageConnection(
                None, self.DATASTORE_BLOB_SERVICE_URI, self.DATASTORE_TABLE_SERVICE_URI, self.DATASTORE_CLIENT_ID
            )
        if self.STORAGE_ACCOUNT_CONNECTION_STRING is None:
            raise SettingsError(
                "invalid configuration: the datastore is not configured: set DATASTORE__blobServiceUri and "
                "DATASTORE__tableServiceUri (keyless), or DATASTORE / STORAGE_ACCOUNT_CONNECTION_STRING is not set"
            )
        return StorageConnection(self.STORAGE_ACCOUNT_CONNECTION_STRING.get_secret_value(), None, None, None)

    @field_validator("STORAGE_ACCOUNT_CONTAINER_NAME")
    @classmethod
    def _container_name_is_valid(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", value):
            raise ValueError("must be 3-63 lower-case letters, digits or single hyphens")
        return value

    @field_validator("IMAGE_FOLDER", "LABEL_FOLDER", "QUARANTINE_FOLDER", "LABEL_MAP_BLOB")
    @classmethod
    def _folder_is_relative(cls, value: str) -> str:
        value = value.strip("/")
        if not _FOLDER_PATTERN.fullmatch(value) or ".." in value.split("/"):
            raise ValueError("must be a relative path inside the container, like 'data/images'")
        return value

    @field_validator("STORAGE_ACCOUNT_CONNECTION_STRING")
    @classmethod
    def _connection_string_is_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        """Refused at start with the variable's name, never at the first storage call with the SDK's words."""
        if value is None:
            return value
        text = value.get_secret_value().strip()
        if not text:
            raise ValueError("is empty")
        from azure.storage.blob import BlobServiceClient  # parses the string; no network

        try:
            BlobServiceClient.from_connection_string(text)
        except ValueError:
            raise ValueError(
                "is not a storage connection string (expected 'DefaultEndpointsProtocol=https;AccountName=...;"
                "AccountKey=...', a BlobEndpoint with a SharedAccessSignature, or 'UseDevelopmentStorage=true')"
            ) from None
        return value


#: Fields read from more than one variable: an error names the one the user set.
_ALIASES = {"STORAGE_ACCOUNT_CONNECTION_STRING": ("STORAGE_ACCOUNT_CONNECTION_STRING", "DATASTORE")}


def _variable_set(field: str) -> str:
    import os

    names = [name for name in _ALIASES.get(field, ()) if os.environ.get(name)]
    return " and ".join(names) if names else field


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings (`overrides` win over the environment); SettingsError names every bad one."""
    return _validated(Settings, overrides)


def load_registry_location(**overrides: object) -> RegistryLocation:
    """Read and validate the registry's location alone (a step's only settings); errors as `load_settings`."""
    return _validated(RegistryLocation, overrides)


def _validated(model: type[_Model], overrides: dict[str, object]) -> _Model:
    try:
        return model(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = []
        for item in error.errors():
            variable = _variable_set(".".join(str(part) for part in item["loc"]))
            message = "is not set" if item["type"] == "missing" else item["msg"].removeprefix("Value error, ")
            problems.append(f"{variable} {message}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


@functools.cache
def get_settings() -> Settings:
    """Settings of this process, read once on first use."""
    return load_settings()
