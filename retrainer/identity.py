"""The one way the service and the steps sign in to Azure: DefaultAzureCredential, keyless.

On Azure ML computes and in function apps with a user-assigned identity, DefaultAzureCredential
must be told which managed identity to use: azure-identity does not read the platform's
DEFAULT_IDENTITY_CLIENT_ID by itself. Elsewhere (az login, a system-assigned identity) it needs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.identity import DefaultAzureCredential


def azure_credential(managed_identity_client_id: str | None = None) -> DefaultAzureCredential:
    from azure.identity import DefaultAzureCredential

    if managed_identity_client_id:
        return DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id)
    return DefaultAzureCredential()
