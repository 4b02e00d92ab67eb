"""Keyless, for real: Azurite over HTTPS with OAuth, tokens from a managed-identity endpoint, no key anywhere.

The function app's handlers, the data loader and the HTTP API run with only the identity-based
DATASTORE__* settings; Azurite checks every bearer token's audience, issuer and expiry as Azure
Storage does, and refuses a token minted for another audience.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import azure.functions as func
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from devtools.azurite import AzuriteEndpoints, running_azurite, write_self_signed_certificate
from devtools.synthetic import SheetSpec, write_dataset_zip
from retrainer import bootstrap
from retrainer.datastore import Datastore
from retrainer.events import BLOB_CREATED, build_subject
from retrainer.ingestion import loader
from retrainer.ledger import Ledger
from retrainer.settings import load_settings
from tests.helpers import blob_trigger_client, indexed_functions, jpeg_bytes, read_jsonl
from tests.identity_server import SECRET_HEADER, IdentityEndpoint, identity_endpoint
from tests.npy_files import legacy_npy

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTAINER = "data"
KEY_VARIABLES = (
    "STORAGE_ACCOUNT_CONNECTION_STRING",
    "DATASTORE",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def oauth_azurite(certificate: tuple[Path, Path]) -> Iterator[AzuriteEndpoints]:
    with running_azurite(PROJECT_ROOT, tls=certificate, oauth=True) as endpoints:
        yield endpoints


@pytest.fixture
def keyless_env(
    monkeypatch: pytest.MonkeyPatch, oauth_azurite: AzuriteEndpoints, certificate: tuple[Path, Path]
) -> Iterator[IdentityEndpoint]:
    """The environment of a deployed, keyless function app, pointed at Azurite."""
    for variable in (*KEY_VARIABLES, "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.setenv("DATASTORE__blobServiceUri", oauth_azurite.service_uri("blob"))
    monkeypatch.setenv("DATASTORE__queueServiceUri", oauth_azurite.service_uri("queue"))
    monkeypatch.setenv("DATASTORE__tableServiceUri", oauth_azurite.service_uri("table"))
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", CONTAINER)
    monkeypatch.setenv("LEDGER_TABLE_PREFIX", f"k{os.getpid()}{datetime.now(UTC):%H%M%S%f}")
    monkeypatch.setenv("RETRAIN_MIN_NEW_IMAGES", "1000")
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    for variable in ("IMAGE_FOLDER", "LABEL_FOLDER", "QUARANTINE_FOLDER", "LABEL_MAP_BLOB"):
        monkeypatch.delenv(variable, raising=False)
    with identity_endpoint() as endpoint:
        monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
        monkeypatch.setenv("IDENTITY_HEADER", SECRET_HEADER)
        bootstrap.reset()
        yield endpoint
        bootstrap.reset()


def no_key_in_the_environment() -> None:
    leaked = [name for name in KEY_VARIABLES if name in os.environ]
    assert leaked == [] and not [v for v in os.environ.values() if "AccountKey=" in v]


def keyless_store() -> Datastore:
    store = Datastore.from_settings(load_settings())
    store.ensure_container()
    return store


def test_the_data_loader_and_the_blob_trigger_work_by_identity(keyless_env: IdentityEndpoint, tmp_path: Path) -> None:
    no_key_in_the_environment()
    zip_path = write_dataset_zip(tmp_path / "set.zip", 4, seed=11, spec=SheetSpec(200, 260, 2, 3))
    assert loader.main(["--raw-blob-sas-url", str(zip_path), "--raw-input-path", str(tmp_path / "raw")]) == 0
    store = keyless_store()
    assert len([b for b in store.list("data/labels/") if b.name.endswith(".jsonl")]) == 4
    label = legacy_npy([["Gate valve", [10, 10, 50, 30], "1"]])
    store.write("data/images/keyless.jpg", jpeg_bytes(100, 100))
    store.write("data/labels/keyless_symbols.npy", label)
    trigger = indexed_functions()["convert_label"].get_user_function()
    trigger(blob_trigger_client(CONTAINER, "data/labels/keyless_symbols.npy"))
    assert read_jsonl(store.read("data/labels/keyless.jsonl"))[0]["image_url"] == "keyless.jpg"
    assert keyless_env.requests and all(r["resource"] == ["https://storage.azure.com"] for r in keyless_env.requests)


def test_event_grid_and_http_handlers_work_by_identity(keyless_env: IdentityEndpoint) -> None:
    no_key_in_the_environment()
    store = keyless_store()
    store.write("data/images/new.jpg", jpeg_bytes(64, 64))
    on_event = indexed_functions()["on_event"].get_user_function()
    on_event(
        func.EventGridEvent(
            id="e1",
            data={"api": "PutBlob", "eTag": store.etag("data/images/new.jpg")},
            topic="/subscriptions/s/providers/Microsoft.Storage/storageAccounts/a",
            subject=build_subject(CONTAINER, "data/images/new.jpg"),
            event_type=BLOB_CREATED,
            event_time=datetime.now(UTC),
            data_version="1",
        )
    )
    ledger = Ledger.from_settings(load_settings())
    assert [image.path for image in ledger.images.pending()] == ["data/images/new.jpg"]
    list_runs = indexed_functions()["list_runs"].get_user_function()
    response = list_runs(func.HttpRequest("GET", "/api/runs", headers={}, params={}, route_params={}, body=b""))
    assert response.status_code == 200 and json.loads(response.get_body())["pending_images"] == 1


def test_a_token_for_another_audience_is_refused(keyless_env: IdentityEndpoint) -> None:
    keyless_env.audience_override = "https://management.azure.com"
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as refused:
        keyless_store().read("data/anything.json")
    assert getattr(refused.value, "status_code", None) in (401, 403)
