"""The one way the service and the steps sign in to Azure: DefaultAzureCredential, keyless.

On Azure ML computes and in function apps with a user-assigned identity, DefaultAzureCredential
must be told which managed identity to use: azure-identity does not read the platform's
DEFAULT_IDENTITY_CLIENT_ID by itself. Elsewhere (az login, a system-assigned identity) it needs nothing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.identity import DefaultAzureCredential


def azure_credential(managed_identity_client_id: str | None = None) -> DefaultAzureCredential:
    from azure.identity import DefaultAzureCredential

    if managed_identity_client_id:
        return DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id)
    return DefaultAzureCredential()


#: The scope of Azure Storage (blobs, queues and tables alike).
STORAGE_SCOPE = "https://storage.azure.com/.default"


@functools.cache
def signed_in_credential(managed_identity_client_id: str | None, scope: str = STORAGE_SCOPE) -> DefaultAzureCredential:
    """A credential that has shown it can sign in: one token up front, and one credential per process, so the
    blob and table clients share its cached token instead of each signing in.

    Without it, a machine with no identity learns so only after the storage SDK's retries (21 s to
    fail one blob call here); the chain itself fails in milliseconds. Raises SettingsError with the remedy.
    """
    from azure.core.exceptions import ClientAuthenticationError

    from shared.settings import SettingsError

    credential = azure_credential(managed_identity_client_id)
    try:
        credential.get_token(scope)
    except ClientAuthenticationError:
        raise SettingsError(
            "keyless storage (DATASTORE__blobServiceUri): no identity could sign in. On a laptop run `az login`; "
            "in Azure give the app or compute a managed identity (DATASTORE__clientId names a user-assigned one)"
        ) from None
    return credential
