"""The one narrow interface to where pipelines, data assets and models live.

Two implementations: `azureml.AzureMLWorkspace` (azure-ai-ml, imported lazily) and
`local.LocalWorkspace` (folders on this machine). Everything that would talk to Azure ML goes
through `Workspace`, so the rest of the service runs and is tested locally.
"""

from __future__ import annotations

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


class Workspace(Protocol):
    def register_data_asset(
        self, name: str, folder: Path, *, description: str, tags: dict[str, str], datastore: str | None = None
    ) -> DataAssetRef:
        """Store an MLTable folder as the next version of a data asset."""
        ...


def open_workspace(settings: Settings) -> Workspace:
    """The workspace the settings point at (WORKSPACE_BACKEND, or azureml when its variables are set)."""
    if settings.backend() == "azureml":
        from retrainer.workspace.azureml import AzureMLWorkspace

        return AzureMLWorkspace.from_settings(settings)
    from retrainer.workspace.local import LocalWorkspace

    return LocalWorkspace(settings.LOCAL_WORKSPACE_DIR)
