"""The two narrow interfaces to where pipelines, data assets and models live, and their two backends.

- `PipelineRunner` (the service and the `retrain` command): submit, status, cancel, list.
- `ModelRegistry` (the pipeline steps): data assets, model versions, tags and the promotion lock.

Backends: `azureml` (azure-ai-ml, imported lazily: the SDK is heavy) and `local` (folders, detached
processes and an MLflow registry on this machine), so the rest of the service runs and is tested locally.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from retrainer.records import AcceptedClasses, DataAssetRef, ModelVersion, RunStatus
from retrainer.settings import RegistryLocation, Settings

__all__ = ["ModelRegistry", "PipelineRunner", "open_registry", "open_runner"]


class PipelineRunner(Protocol):
    """Where retraining runs are started and followed."""

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


class ModelRegistry(Protocol):
    """Data assets and registered models, as the pipeline steps use them."""

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

    def latest_document(self, name: str) -> bytes | None:
        """The newest version of a small versioned document (None when there is none yet)."""
        ...

    def latest_versioned_document(self, name: str) -> tuple[int, bytes] | None:
        """The newest version of a document and its number, read together (None when there is none yet).

        The content is returned as stored, damaged or not (empty when the version lost its file): the reader
        validates it and can name the version in what it reports.
        """
        ...

    def create_document(self, name: str, version: str, content: bytes) -> bool:
        """Store a document version only if it does not exist yet: False when another writer was first."""
        ...


def open_runner(settings: Settings, accepted_classes: AcceptedClasses | None = None) -> PipelineRunner:
    """The pipeline runner the settings point at (WORKSPACE_BACKEND, or azureml when its variables are set).

    `accepted_classes` lets the Azure ML runner check that the champion's classes are the service's before
    it trains from the champion's checkpoint; without it the check finds no label map and trains afresh.
    """
    if settings.backend() == "azureml":
        from retrainer.workspace.azureml import AzureMLPipelineRunner

        return AzureMLPipelineRunner.from_settings(settings, accepted_classes=accepted_classes)
    from retrainer.workspace.local import LocalPipelineRunner

    return LocalPipelineRunner(settings.LOCAL_WORKSPACE_DIR)


def open_registry(location: RegistryLocation) -> ModelRegistry:
    """The model registry at `location` (same choice of backend as `open_runner`). A step passes the
    `RegistryLocation` it read alone; the service passes its `Settings`, which are one."""
    if location.backend() == "azureml":
        from retrainer.workspace.azureml import AzureMLModelRegistry

        return AzureMLModelRegistry.from_settings(location)
    from retrainer.workspace.local import LocalModelRegistry

    return LocalModelRegistry(location.LOCAL_WORKSPACE_DIR)
