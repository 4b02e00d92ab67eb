"""The model registry the pipeline steps and the service share: one narrow port, two backends.

`ModelRegistry`: data assets, model versions, tags, versioned documents and the promotion lock. Backends:
`azureml` (azure-ai-ml, imported lazily: the SDK is heavy) and `local` (folders and an MLflow registry on this
machine), chosen by the registry's location (`RegistryLocation`: a step reads it alone, the service's
`Settings` is one).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from shared.records import DataAssetRef, ModelVersion
from shared.settings import RegistryLocation

__all__ = ["ModelRegistry", "open_registry"]


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
        """A local folder holding the version's MLflow model (downloaded when it lives remotely); FileNotFoundError
        when the registry no longer has its MLmodel file."""
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


def open_registry(location: RegistryLocation) -> ModelRegistry:
    """The model registry at `location` (WORKSPACE_BACKEND, or azureml when its variables are set). A step
    passes the `RegistryLocation` it read alone; the service passes its `Settings`, which are one."""
    if location.backend() == "azureml":
        from shared.registry.azureml import AzureMLModelRegistry

        return AzureMLModelRegistry.from_settings(location)
    from shared.registry.local import LocalModelRegistry

    return LocalModelRegistry(location.LOCAL_WORKSPACE_DIR)
