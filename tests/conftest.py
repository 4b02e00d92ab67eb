"""Shared fixtures: a real Azurite for the whole session, one fresh container and table prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrainer.azurite import AzuriteEndpoints, running_azurite
from retrainer.datastore import Datastore
from retrainer.ledger import Ledger

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteEndpoints]:
    with running_azurite(PROJECT_ROOT) as endpoints:
        yield endpoints


@pytest.fixture
def connection_string(azurite: AzuriteEndpoints) -> str:
    return azurite.connection_string


@pytest.fixture
def container_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def table_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def datastore(connection_string: str, container_name: str) -> Datastore:
    store = Datastore.from_connection_string(connection_string, container_name)
    store.ensure_container()
    return store


@pytest.fixture
def ledger(connection_string: str, table_prefix: str) -> Ledger:
    book = Ledger.from_connection_string(connection_string, table_prefix)
    book.ensure_tables()
    return book


@pytest.fixture
def service_env(
    monkeypatch: pytest.MonkeyPatch, connection_string: str, container_name: str, table_prefix: str
) -> None:
    """The environment a deployed function app would have, pointed at this test's container."""
    from retrainer.settings import get_settings

    monkeypatch.setenv("STORAGE_ACCOUNT_CONNECTION_STRING", connection_string)
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", container_name)
    monkeypatch.setenv("LEDGER_TABLE_PREFIX", table_prefix)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
