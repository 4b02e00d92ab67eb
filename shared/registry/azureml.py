"""The Azure ML model registry (azure-ai-ml SDK v2). Imported only where Azure ML is used: the SDK is heavy."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Data, Model
from azure.core.exceptions import ResourceNotFoundError

from shared.identity import azure_credential
from shared.records import DataAssetRef, ModelVersion
from shared.settings import RegistryLocation


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
