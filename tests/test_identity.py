"""Signing in without keys: the credential asks the managed-identity endpoint for the right identity."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrainer.settings import load_settings
from shared.registry.azureml import ml_client
from tests.identity_server import SECRET_HEADER, IdentityEndpoint, identity_endpoint

WORKSPACE_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_RESOURCE_GROUP": "rg-pid",
    "AZUREML_WORKSPACE_NAME": "mlw-pid",
}


@pytest.fixture
def managed_identity_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityEndpoint]:
    for variable in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(variable, raising=False)
    for key, value in WORKSPACE_ENV.items():
        monkeypatch.setenv(key, value)
    with identity_endpoint() as endpoint:
        monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
        monkeypatch.setenv("IDENTITY_HEADER", SECRET_HEADER)
        yield endpoint


def test_steps_on_an_azure_ml_compute_sign_in_as_its_managed_identity(
    managed_identity_env: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEFAULT_IDENTITY_CLIENT_ID", "22222222-2222-2222-2222-222222222222")
    token = ml_client(load_settings())._credential.get_token("https://management.azure.com/.default")
    assert token.token
    (request,) = managed_identity_env.requests
    assert request["client_id"] == ["22222222-2222-2222-2222-222222222222"]
    assert request["resource"] == ["https://management.azure.com"]


def test_without_a_client_id_the_default_identity_signs_in(
    managed_identity_env: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEFAULT_IDENTITY_CLIENT_ID", raising=False)
    ml_client(load_settings())._credential.get_token("https://management.azure.com/.default")
    (request,) = managed_identity_env.requests
    assert "client_id" not in request


def test_keyless_storage_with_no_identity_says_so_at_once_with_the_remedy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One token is asked for up front; before, a blob call learnt it only after the SDK's retries (21 s)."""
    import subprocess
    import sys

    from devtools.synthetic import SheetSpec, write_dataset_zip

    zip_path = write_dataset_zip(tmp_path / "set.zip", count=1, seed=1, spec=SheetSpec(min_side=200, max_side=300))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("STORAGE_ACCOUNT_CONNECTION_STRING", "DATASTORE", "IDENTITY_ENDPOINT", "MSI_ENDPOINT")
        and not key.startswith("AZURE_")
    }
    env.update(
        {
            "DATASTORE__blobServiceUri": "https://127.0.0.1:1/",
            "DATASTORE__tableServiceUri": "https://127.0.0.1:1/",
            "STORAGE_ACCOUNT_CONTAINER_NAME": "data",
            "PATH": "/usr/bin:/bin",  # no az, azd or pwsh: nothing can sign in
        }
    )
    command = [sys.executable, "-m", "retrainer.ingestion.loader", "--raw-blob-sas-url", str(zip_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no identity could sign in" in result.stderr and "az login" in result.stderr
