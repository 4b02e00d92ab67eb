"""Shared fixtures: a real Azurite for the whole session, one fresh container and table prefix per test.

Tiers are assigned by construction, never by hand: a test that needs Azurite (through the `azurite`
fixture, an `azurite` parameter, or a module that starts its own with `running_azurite`) is
`integration`, as it needs Node; a test that trains (the `trained_model` fixture, or a module that
imports the training step) is `slow`. `make test-fast` runs the rest, without Node, in well under a
minute; a test marked `slow` by hand stays slow.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devtools.azurite import AzuriteEndpoints, running_azurite
from retrainer.datastore import Datastore
from retrainer.ledger import Ledger

if TYPE_CHECKING:
    from _socket import _Address

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Files that tests copy into a copy of the project (tests/test_step_recipe.py), not tests of this one.
collect_ignore = ["fixtures"]


#: Fixtures that train a model, and what a module imports when its tests train.
_TRAINING_FIXTURES = frozenset({"trained_model"})
_TRAINING_MODULES = ("pipeline_steps.train", "pipeline_steps.detector.engine")


def _module_starts_azurite(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    return module is not None and getattr(module, "running_azurite", None) is running_azurite


def _module_trains(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    if module is None:
        return False
    imported = {getattr(value, "__name__", "") for value in vars(module).values()}
    imported |= {getattr(value, "__module__", "") for value in vars(module).values() if callable(value)}
    return any(name in imported for name in _TRAINING_MODULES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        parameters = getattr(getattr(item, "callspec", None), "params", {})
        azurite_parameter = any(isinstance(value, str) and value == "azurite" for value in parameters.values())
        if "azurite" in fixtures or azurite_parameter or _module_starts_azurite(item):
            item.add_marker(pytest.mark.integration)
        if fixtures & _TRAINING_FIXTURES or _module_trains(item):
            item.add_marker(pytest.mark.slow)


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
) -> Iterator[None]:
    """The environment a deployed function app would have, pointed at this test's container."""
    from retrainer import bootstrap

    monkeypatch.setenv("DATASTORE", connection_string)  # the name the label trigger's connection reads
    monkeypatch.delenv("STORAGE_ACCOUNT_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", container_name)
    monkeypatch.setenv("LEDGER_TABLE_PREFIX", table_prefix)
    for variable in ("IMAGE_FOLDER", "LABEL_FOLDER", "QUARANTINE_FOLDER", "LABEL_MAP_BLOB"):
        monkeypatch.delenv(variable, raising=False)
    bootstrap.reset()
    yield
    bootstrap.reset()


@pytest.fixture(scope="session")
def training_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Small generated train and validation MLTable folders (file:// image URLs)."""
    from devtools.synthetic import SheetSpec, write_mltable_set

    tiny = SheetSpec(min_side=256, max_side=320, min_symbols=3, max_symbols=5)
    root = tmp_path_factory.mktemp("sets")
    train = write_mltable_set(root / "train", 10, seed=1, spec=tiny)
    return train, write_mltable_set(root / "val", 4, seed=2, spec=tiny)


@pytest.fixture(scope="session")
def trained_model(training_sets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow model from the local trainer (one epoch: seconds, not minutes)."""
    import json

    from devtools.synthetic import LABEL_MAP
    from pipeline_steps import train

    output = tmp_path_factory.mktemp("model") / "model"
    label_map = output.parent / "label_map.json"
    label_map.write_text(json.dumps(LABEL_MAP))
    code = train.main(
        [
            "--train-data",
            str(training_sets[0]),
            "--val-data",
            str(training_sets[1]),
            "--output",
            str(output),
            "--epochs",
            "1",
            "--seed",
            "3",
            "--label-map",
            str(label_map),
        ]
    )
    assert code == 0
    return output


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """Hidden-network guard: a test that reaches beyond this machine fails instead of leaking traffic."""
    import ipaddress
    import socket

    real_connect = socket.socket.connect

    def guarded_connect(sock: socket.socket, address: _Address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            host = address[0]
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                raise ConnectionRefusedError(f"tests may only reach loopback addresses, not {host}")
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded_connect)
        yield
