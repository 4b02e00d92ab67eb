"""Signing in without keys: the credential asks the managed-identity endpoint for the right identity."""

from __future__ import annotations

import pytest

from retrainer.settings import load_settings
from retrainer.workspace.azureml import ml_client
from tests.identity_server import SECRET_HEADER, identity_endpoint

WORKSPACE_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_RESOURCE_GROUP": "rg-pid",
    "AZUREML_WORKSPACE_NAME": "mlw-pid",
}


@pytest.fixture
def managed_identity_env(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for variable in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(variable, raising=False)
    for key, value in WORKSPACE_ENV.items():
        monkeypatch.setenv(key, value)
    with identity_endpoint() as endpoint:
        monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
        monkeypatch.setenv("IDENTITY_HEADER", SECRET_HEADER)
        yield endpoint


def test_steps_on_an_azure_ml_compute_sign_in_as_its_managed_identity(
    managed_identity_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEFAULT_IDENTITY_CLIENT_ID", "22222222-2222-2222-2222-222222222222")
    token = ml_client(load_settings())._credential.get_token("https://management.azure.com/.default")
    assert token.token
    (request,) = managed_identity_env.requests
    assert request["client_id"] == ["22222222-2222-2222-2222-222222222222"]
    assert request["resource"] == ["https://management.azure.com"]


def test_without_a_client_id_the_default_identity_signs_in(managed_identity_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("DEFAULT_IDENTITY_CLIENT_ID", raising=False)
    ml_client(load_settings())._credential.get_token("https://management.azure.com/.default")
    (request,) = managed_identity_env.requests
    assert "client_id" not in request
