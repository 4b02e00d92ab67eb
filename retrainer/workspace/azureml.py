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

from retrainer.settings import Settings
from retrainer.workspace import DataAssetRef, ModelVersion


class AzureMLModelRegistry:
    """Model-registry half of the Azure ML workspace (azure-ai-ml v2 models API)."""

    _ml_client: MLClient

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


def _model_version(model: Model) -> ModelVersion:
    return ModelVersion(model.name, str(model.version), dict(model.tags or {}), f"azureml:{model.name}:{model.version}")


class AzureMLWorkspace(AzureMLModelRegistry):
    def __init__(self, ml_client: MLClient) -> None:
        self._ml_client = ml_client

    @classmethod
    def from_settings(cls, settings: Settings, credential: Any = None) -> AzureMLWorkspace:
        """MLClient for the configured workspace with DefaultAzureCredential (managed identity or az login)."""
        subscription, resource_group, workspace = settings.azureml_workspace()
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return cls(MLClient(credential, subscription, resource_group, workspace))

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
