"""Where the model registry is, and who signs in to it: the only settings a pipeline step reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings

from shared.settings.checks import SETTINGS_CONFIG, SettingsError


class RegistryLocation(BaseSettings):
    """Where the model registry is, and who signs in to it: what a pipeline step reads, and nothing else.

    Six fields of the service settings (`Settings` is a RegistryLocation), read from the same variables; a
    step builds this alone (`load_registry_location`), so the rest of the service configuration never
    reaches a step, which takes its behaviour from its component inputs.
    """

    model_config = SETTINGS_CONFIG

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
    # Who signs in to the workspace from a compute (shared/identity.py); unset, the default identity.
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
