"""The datastore: its account (a connection string, or endpoints and an identity), container and folders."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from shared.settings.checks import SETTINGS_CONFIG, SettingsError

_FOLDER_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


@dataclass(frozen=True)
class StorageConnection:
    """The datastore account: a connection string, or endpoints and an identity (keyless)."""

    connection_string: str | None
    blob_service_uri: str | None
    table_service_uri: str | None
    client_id: str | None

    def __repr__(self) -> str:  # a connection string holds the account key
        kind = "connection string" if self.connection_string else f"identity at {self.blob_service_uri}"
        return f"StorageConnection({kind})"


class StorageSettings(BaseSettings):
    """The datastore account, the container and its folders, and the ledger's tables."""

    model_config = SETTINGS_CONFIG

    # The datastore connection, named DATASTORE as the blob trigger's `connection`: either Azure
    # Functions' identity-based form (DATASTORE__blobServiceUri, ...: no key anywhere) or a connection
    # string (DATASTORE, or STORAGE_ACCOUNT_CONNECTION_STRING as the original pipeline named it).
    STORAGE_ACCOUNT_CONNECTION_STRING: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STORAGE_ACCOUNT_CONNECTION_STRING", "DATASTORE"),
        description="Connection string of the datastore's storage account (Azurite, or users who want keys). "
        "This or the keyless DATASTORE__blobServiceUri and DATASTORE__tableServiceUri: one of the two is required.",
    )
    DATASTORE_BLOB_SERVICE_URI: str | None = Field(
        default=None,
        validation_alias="DATASTORE__blobServiceUri",
        pattern=r"^https://",
        description="Keyless (how Azure runs it): the datastore account's blob endpoint, "
        "https://<account>.blob.core.windows.net, signed in with DefaultAzureCredential (the managed identity).",
    )
    DATASTORE_QUEUE_SERVICE_URI: str | None = Field(
        default=None,
        validation_alias="DATASTORE__queueServiceUri",
        pattern=r"^https://",
        description="Keyless: the datastore account's queue endpoint (the Functions host's blob trigger needs it).",
    )
    DATASTORE_TABLE_SERVICE_URI: str | None = Field(
        default=None,
        validation_alias="DATASTORE__tableServiceUri",
        pattern=r"^https://",
        description="Keyless: the datastore account's table endpoint, the ledger's; required with the blob one.",
    )
    DATASTORE_CLIENT_ID: str | None = Field(
        default=None,
        validation_alias="DATASTORE__clientId",
        description="Keyless: client id of a user-assigned identity; unset, the default identity signs in. Set it only "
        "together with DATASTORE__credential=managedidentity (read by the Functions host), or the blob trigger signs "
        "in as the system identity while the code uses the user-assigned one.",
    )
    STORAGE_ACCOUNT_CONTAINER_NAME: str = Field(
        default="data",
        description="Blob container that holds images, labels, quarantine and the promoted model's record.",
    )
    IMAGE_FOLDER: str = Field(default="data/images", description="Folder of the images in the container.")
    LABEL_FOLDER: str = Field(
        default="data/labels", description="Folder of the .npy labels and their converted .jsonl."
    )
    QUARANTINE_FOLDER: str = Field(
        default="quarantine", description="Where invalid files are moved, each with a reason beside it."
    )
    LABEL_MAP_BLOB: str = Field(
        default="data/label_map.json",
        description="Blob mapping class id to <Instrument|Piping|Equipment>/<Subcategory>/<Label>; "
        "when absent, class ids are not checked.",
    )
    LEDGER_TABLE_PREFIX: str = Field(
        default="retrain", description="Prefix of the Table Storage tables that hold the service state."
    )

    def storage_configured(self) -> bool:
        """Whether a datastore account is configured (by identity or connection string)."""
        return bool(self.DATASTORE_BLOB_SERVICE_URI or self.STORAGE_ACCOUNT_CONNECTION_STRING)

    def storage_connection(self) -> StorageConnection:
        """How to reach the datastore: by identity when DATASTORE__blobServiceUri is set, else by connection string."""
        if self.DATASTORE_BLOB_SERVICE_URI:
            if not self.DATASTORE_TABLE_SERVICE_URI:
                raise SettingsError(
                    "invalid configuration: DATASTORE__tableServiceUri is not set (the ledger's tables; "
                    "needed with DATASTORE__blobServiceUri)"
                )
            return StorageConnection(
                None, self.DATASTORE_BLOB_SERVICE_URI, self.DATASTORE_TABLE_SERVICE_URI, self.DATASTORE_CLIENT_ID
            )
        if self.STORAGE_ACCOUNT_CONNECTION_STRING is None:
            raise SettingsError(
                "invalid configuration: the datastore is not configured: set DATASTORE__blobServiceUri and "
                "DATASTORE__tableServiceUri (keyless), or DATASTORE / STORAGE_ACCOUNT_CONNECTION_STRING is not set"
            )
        return StorageConnection(self.STORAGE_ACCOUNT_CONNECTION_STRING.get_secret_value(), None, None, None)

    @field_validator("STORAGE_ACCOUNT_CONTAINER_NAME")
    @classmethod
    def _container_name_is_valid(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", value):
            raise ValueError("must be 3-63 lower-case letters, digits or single hyphens")
        return value

    @field_validator("IMAGE_FOLDER", "LABEL_FOLDER", "QUARANTINE_FOLDER", "LABEL_MAP_BLOB")
    @classmethod
    def _folder_is_relative(cls, value: str) -> str:
        value = value.strip("/")
        if not _FOLDER_PATTERN.fullmatch(value) or ".." in value.split("/"):
            raise ValueError("must be a relative path inside the container, like 'data/images'")
        return value

    @field_validator("STORAGE_ACCOUNT_CONNECTION_STRING")
    @classmethod
    def _connection_string_is_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        """Refused at start with the variable's name, never at the first storage call with the SDK's words."""
        if value is None:
            return value
        text = value.get_secret_value().strip()
        if not text:
            raise ValueError("is empty")
        from azure.storage.blob import BlobServiceClient  # parses the string; no network

        try:
            BlobServiceClient.from_connection_string(text)
        except ValueError:
            raise ValueError(
                "is not a storage connection string (expected 'DefaultEndpointsProtocol=https;AccountName=...;"
                "AccountKey=...', a BlobEndpoint with a SharedAccessSignature, or 'UseDevelopmentStorage=true')"
            ) from None
        return value
