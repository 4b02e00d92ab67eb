"""Azure ML workspace (azure-ai-ml SDK v2). Imported only where Azure ML is used: the SDK is heavy."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Data, Model
from azure.core.exceptions import ResourceNotFoundError

from retrainer.identity import azure_credential
from retrainer.promotion import PROMOTION_RECORD_FILE, PromotionRecord
from retrainer.records import AcceptedClasses, DataAssetRef, ModelVersion, RunState, RunStatus, run_state
from retrainer.settings import RegistryLocation, Settings


def ml_client(location: RegistryLocation, credential: Any = None) -> MLClient:
    """MLClient for the workspace at `location`; by default keyless (managed identity, or az login)."""
    subscription, resource_group, workspace = location.azureml_workspace()
    if credential is None:
        credential = azure_credential(location.DEFAULT_IDENTITY_CLIENT_ID)
    return MLClient(credential, subscription, resource_group, workspace)


class AzureMLModelRegistry:
    """Data assets and models of an Azure ML workspace (azure-ai-ml v2)."""

    def __init__(self, client: MLClient) -> None:
        self._ml_client = client

    @classmethod
    def from_settings(cls, location: RegistryLocation, credential: Any = None) -> AzureMLModelRegistry:
        return cls(ml_client(location, credential))

    @staticmethod
    def data_asset_entity(
        name: str, folder: Path, *, description: str, tags: dict[str, str], datastore: str | None = None
    ) -> Data:
        """The versioned mltable data asset; without a version Azure ML assigns the next one."""
        if not (folder / "MLTable").is_file():
            raise FileNotFoundError(f"{folder} is not an MLTable folder (no MLTable file)")
        data = Data(name=name, path=str(folder), type=AssetTypes.MLTABLE, description=description, tags=tags)
        if datastore:
            data.datastore = datastore  # the upload goes to this datastore instead of the default one
        return data

    def register_data_asset(
        self, name: str, folder: Path, *, description: str, tags: dict[str, str], datastore: str | None = None
    ) -> DataAssetRef:
        entity = self.data_asset_entity(name, folder, description=description, tags=tags, datastore=datastore)
        registered = self._ml_client.data.create_or_update(entity)
        return DataAssetRef(
            registered.name, str(registered.version), f"azureml:{registered.name}:{registered.version}", tags
        )

    @staticmethod
    def model_entity(name: str, folder: Path, *, description: str, tags: dict[str, str]) -> Model:
        if not (folder / "MLmodel").is_file():
            raise FileNotFoundError(f"{folder} is not an MLflow model folder (no MLmodel file)")
        return Model(path=str(folder), type=AssetTypes.MLFLOW_MODEL, name=name, description=description, tags=tags)

    def register_model(self, name: str, folder: Path, *, description: str, tags: dict[str, str]) -> ModelVersion:
        """Without a version Azure ML assigns the next one."""
        registered = self._ml_client.models.create_or_update(
            self.model_entity(name, folder, description=description, tags=tags)
        )
        return _model_version(registered)

    def model_versions(self, name: str) -> list[ModelVersion]:
        try:
            found = list(self._ml_client.models.list(name=name))
        except ResourceNotFoundError:
            return []
        return sorted((_model_version(model) for model in found), key=lambda v: int(v.version))

    def set_model_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        model = self._ml_client.models.get(name=name, version=version)
        model.tags = {**(model.tags or {}), **tags}
        self._ml_client.models.create_or_update(model)

    def promotion_lock(self, name: str) -> AbstractContextManager[None]:
        """Azure ML has no lock on tags: the tag step re-reads after writing and repairs instead."""
        return contextlib.nullcontext()

    def local_model_path(self, version: ModelVersion, scratch: Path) -> Path:
        self._ml_client.models.download(name=version.name, version=version.version, download_path=str(scratch))
        found = sorted(scratch.rglob("MLmodel"))
        if not found:
            raise FileNotFoundError(f"model {version.name}:{version.version} has no MLmodel file")
        return found[0].parent

    # Versioned documents are custom-model assets: immutable versions, and the registry's public download.
    DOCUMENT_FILE = "document.json"

    @staticmethod
    def document_entity(name: str, version: str, folder: Path) -> Model:
        return Model(
            name=name,
            version=version,
            path=str(folder),
            type=AssetTypes.CUSTOM_MODEL,
            description="a versioned document of the retraining service (not a model)",
            tags={"kind": "document"},
        )

    def latest_document(self, name: str) -> bytes | None:
        latest = self.latest_versioned_document(name)
        return latest[1] if latest else None

    def latest_versioned_document(self, name: str) -> tuple[int, bytes] | None:
        import tempfile

        try:
            versions = [int(m.version) for m in self._ml_client.models.list(name=name)]
        except ResourceNotFoundError:
            return None
        if not versions:
            return None
        with tempfile.TemporaryDirectory() as scratch:
            self._ml_client.models.download(name=name, version=str(max(versions)), download_path=scratch)
            found = sorted(Path(scratch).rglob(self.DOCUMENT_FILE))
            # A version without its file is a damaged document, not a missing one: its reader says so by version.
            return max(versions), found[0].read_bytes() if found else b""

    def create_document(self, name: str, version: str, content: bytes) -> bool:
        """Checked before and after: a version that exists, or that a racing writer overwrote, is not ours."""
        import hashlib
        import tempfile

        try:
            self._ml_client.models.get(name=name, version=version)
            return False
        except ResourceNotFoundError:
            pass
        digest = hashlib.sha256(content).hexdigest()
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / self.DOCUMENT_FILE).write_bytes(content)
            entity = self.document_entity(name, version, Path(scratch))
            entity.tags = {**(entity.tags or {}), "sha256": digest}
            self._ml_client.models.create_or_update(entity)
        stored = self._ml_client.models.get(name=name, version=version)
        return (stored.tags or {}).get("sha256") == digest


def _model_version(model: Model) -> ModelVersion:
    return ModelVersion(
        str(model.name), str(model.version), dict(model.tags or {}), f"azureml:{model.name}:{model.version}"
    )


class AzureMLPipelineRunner:
    """Pipeline jobs of an Azure ML workspace: the service's submit, status, cancel and list."""

    def __init__(self, client: MLClient, settings: Settings, accepted_classes: AcceptedClasses | None = None) -> None:
        self._ml_client = client
        self._settings = settings
        # The classes the service accepts (its label map): the caller, which has the datastore, reads them.
        self._accepted_classes = accepted_classes or (lambda: None)

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: Any = None, accepted_classes: AcceptedClasses | None = None
    ) -> AzureMLPipelineRunner:
        return cls(ml_client(settings, credential), settings, accepted_classes)

    def build_pipeline(self, label: str) -> Any:
        """The pipeline job (or its dataset-reuse variant) for the settings, validated offline."""
        from pipeline_steps.pipeline import build_pipeline_job, component, registered_components, validate_pipeline

        registered = self._settings.PIPELINE_COMPONENTS == "registered"
        source = registered_components(self._ml_client) if registered else component
        job = build_pipeline_job(
            self._settings,
            run_label=label,
            warm_start=self.warm_start(),
            components=source,
            with_label_map=self._accepted_classes() is not None,  # the tag step names classes in its words
        )
        validate_pipeline(job)
        return job

    def warm_start(self) -> Any:
        """Whether training starts from the champion's AutoML checkpoint: auto mode, the champion's model is
        TRAINING_MODEL_NAME, and its classes are the label map's."""
        from pipeline_steps.automl_node import champion_checkpoint

        versions = AzureMLModelRegistry(self._ml_client).model_versions(self._settings.MODEL_BASE_NAME)
        return champion_checkpoint(
            versions,
            self._accepted_classes(),
            enabled=self._settings.WARM_START,
            auto_mode=self._settings.AUTO_MODE,
            model_name=self._settings.TRAINING_MODEL_NAME,
        )

    def submit_pipeline(self, label: str) -> str:
        """Submit the pipeline job. With registered components (the default) nothing is uploaded."""
        job = self.build_pipeline(label)
        created = self._ml_client.jobs.create_or_update(job, experiment_name=self._settings.EXPERIMENT_NAME)
        return str(created.name)

    def register_components(self) -> list[str]:
        """Register the steps' environments and components under the release's version (once per release)."""
        from pipeline_steps.graph import COMPONENT_STEPS
        from pipeline_steps.pipeline import component, environments

        registered = []
        for environment in environments():
            env = self._ml_client.environments.create_or_update(environment)
            registered.append(f"environment {env.name}:{env.version}")
        for name in COMPONENT_STEPS:
            created = self._ml_client.components.create_or_update(component(name))
            registered.append(f"component {created.name}:{created.version}")
        return registered

    def run_status(self, run_id: str) -> RunStatus:
        job = self._ml_client.jobs.get(run_id)
        state = run_state(job.status)
        decision = self._decision(run_id) if state == RunState.COMPLETED else None
        error = None if state != RunState.FAILED else f"Azure ML job {run_id} ended as {job.status}"
        started = job.creation_context.created_at.isoformat() if job.creation_context else None
        return RunStatus(run_id, state, job.status, error, decision, started, None)

    def cancel_run(self, run_id: str) -> None:
        self._ml_client.jobs.begin_cancel(run_id).result()

    def list_runs(self, limit: int = 20) -> list[RunStatus]:
        runs = []
        for job in self._ml_client.jobs.list(parent_job_name=None):
            if job.experiment_name == self._settings.EXPERIMENT_NAME:
                runs.append(RunStatus(job.name, run_state(job.status), job.status, label=job.display_name or ""))
            if len(runs) == limit:
                break
        return runs

    def _decision(self, run_id: str) -> PromotionRecord | None:
        """The tag step's promotion record, downloaded from the finished job."""
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            self._ml_client.jobs.download(run_id, output_name="best_model_metadata", download_path=scratch)
            found = sorted(Path(scratch).rglob(PROMOTION_RECORD_FILE))
            return PromotionRecord.from_json(found[0].read_text()) if found else None
