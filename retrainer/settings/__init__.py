"""One typed settings object, read from environment variables and validated on first use.

`Settings` composes a few typed groups, one module each: the service's own here, `storage` (the datastore),
`service` (batching, single flight, back-off, events) and `serving` (the endpoint); and those a pipeline step
reads too, in `shared.settings`: `registry` (where the model registry is: all a step reads), `training` (the
pipeline and its training) and `promotion` (the promotion rule). A new setting is a field of its group;
`python -m devtools.config_table` puts it in docs/configuration.md.

The variable names are the ones users of the original pipeline already set (STORAGE_ACCOUNT_CONNECTION_STRING,
STORAGE_ACCOUNT_CONTAINER_NAME, ...). Secrets are `SecretStr`, so they print as '**********'
wherever the settings object is shown or logged.
"""

from __future__ import annotations

import functools

from retrainer.settings.service import PIPELINE_OVERHEAD_MINUTES, ServiceSettings
from retrainer.settings.serving import ServingSettings
from retrainer.settings.storage import StorageConnection, StorageSettings
from shared.settings import PromotionSettings, RegistryLocation, TrainingSettings, validated
from shared.settings.checks import SETTINGS_CONFIG

__all__ = ["PIPELINE_OVERHEAD_MINUTES", "Settings", "StorageConnection", "get_settings", "load_settings"]


# Bases in reverse: pydantic lists the fields of the last base first, so the registry's lead the table.
class Settings(
    ServingSettings, ServiceSettings, PromotionSettings, TrainingSettings, StorageSettings, RegistryLocation
):
    """Service configuration; each field reads the environment variable of its upper-case name."""

    model_config = SETTINGS_CONFIG

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


#: Fields read from more than one variable: an error names the one the user set.
_ALIASES = {"STORAGE_ACCOUNT_CONNECTION_STRING": ("STORAGE_ACCOUNT_CONNECTION_STRING", "DATASTORE")}


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings (`overrides` win over the environment); SettingsError names every bad one."""
    return validated(Settings, overrides, _ALIASES)


@functools.cache
def get_settings() -> Settings:
    """Settings of this process, read once on first use."""
    return load_settings()
