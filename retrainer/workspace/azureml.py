"""Azure ML workspace (azure-ai-ml SDK v2). Imported only where Azure ML is used: the SDK is heavy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Data

from retrainer.settings import Settings
from retrainer.workspace import DataAssetRef


class AzureMLWorkspace:
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
