"""The one narrow interface to where pipelines, data assets and models live.

Two implementations: `azureml.AzureMLWorkspace` (azure-ai-ml, imported lazily) and
`local.LocalWorkspace` (folders on this machine). Everything that would talk to Azure ML goes
through `Workspace`, so the rest of the service runs and is tested locally.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from retrainer.settings import Settings


@dataclass(frozen=True)
class DataAssetRef:
    name: str
    version: str
    uri: str  # azureml:<name>:<version> on Azure ML; a file:// URL of the stored copy locally
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    tags: dict[str, str]
    uri: str  # azureml:<name>:<version> on Azure ML; the stored MLflow model folder locally

    @property
    def is_best(self) -> bool:
        return self.tags.get(BEST_MODEL_TAG) == "true"


#: The tag of the version currently promoted (design document: "best_model").
BEST_MODEL_TAG = "best_model"

#: The few run states the service reasons about.
RUN_STATES = ("queued", "running", "completed", "failed", "canceled")
TERMINAL_STATES = frozenset({"completed", "failed", "canceled"})

#: Azure ML job status -> service run state.
AZUREML_STATES = {
    "NotStarted": "queued",
    "Queued": "queued",
    "Preparing": "queued",
    "Provisioning": "queued",
    "Starting": "queued",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "running",
    "Completed": "completed",
    "Failed": "failed",
    "NotResponding": "failed",
    "Canceled": "canceled",
    "Paused": "canceled",
}


def run_state(azureml_status: str) -> str:
    """The service's state for an Azure ML status; an unknown status counts as still running."""
    return AZUREML_STATES.get(azureml_status, "running")


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    state: str  # one of RUN_STATES
    detail: str = ""  # the backend's own status, or the step running now
    error: str | None = None
    decision: dict | None = None  # the tag step's best_model_metadata.json, once the run completed
    started: str | None = None
    ended: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class Workspace(Protocol):
    """Pipelines, data assets and the model registry."""

    def register_data_asset(
        self, name: str, folder: Path, *, description: str, tags: dict[str, str], datastore: str | None = None
    ) -> DataAssetRef:
        """Store an MLTable folder as the next version of a data asset."""
        ...

    def register_model(self, name: str, folder: Path, *, description: str, tags: dict[str, str]) -> ModelVersion:
        """Store an MLflow model folder as the next version of a registered model."""
        ...

    def model_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first (empty when the model does not exist)."""
        ...

    def set_model_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Add or overwrite tags of one version (tags are all that changes after registration)."""
        ...

    def promotion_lock(self, name: str) -> AbstractContextManager[None]:
        """Held while a tag step decides and moves the best tag; where no lock exists, tag steps repair after."""
        ...

    def local_model_path(self, version: ModelVersion, scratch: Path) -> Path:
        """A local folder holding the version's MLflow model (downloaded when it lives remotely)."""
        ...

    def submit_pipeline(self, label: str) -> str:
        """Start the retraining pipeline; returns at once with the run id."""
        ...

    def run_status(self, run_id: str) -> RunStatus:
        """Where the run is; a run whose process died reads as failed, never as running forever."""
        ...

    def cancel_run(self, run_id: str) -> None: ...

    def list_runs(self, limit: int = 20) -> list[RunStatus]:
        """The most recent runs, newest first."""
        ...


def open_workspace(settings: Settings) -> Workspace:
    """The workspace the settings point at (WORKSPACE_BACKEND, or azureml when its variables are set)."""
    if settings.backend() == "azureml":
        from retrainer.workspace.azureml import AzureMLWorkspace

        return AzureMLWorkspace.from_settings(settings)
    from retrainer.workspace.local import LocalWorkspace

    return LocalWorkspace(settings.LOCAL_WORKSPACE_DIR)
