"""Shared fixtures: a real Azurite for the whole session, one fresh container and table prefix per test.

Tiers are assigned by construction where they can be: a test that needs Azurite (through the `azurite`
fixture, an `azurite` parameter, or a module that starts its own with `running_azurite`) is
`integration`, as it needs Node; a test that trains (the `trained_model` fixture, or a module that
imports the training step) or works on a local MLflow store (the `mlflow_workspace` or `mlflow_tracking`
fixture, a `local` registry parameter) is `slow`. Tests that start Chromium or another interpreter are
marked `slow` by hand, saying why. `make test-fast` runs the rest, without Node, in under 40 s on two cores.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devtools.azurite import AzuriteEndpoints, running_azurite
from retrainer.datastore import BlobStore, Datastore
from retrainer.ledger import Ledger
from tests.fakes import InMemoryDatastore, InMemoryTableService
from tests.helpers import Clock

if TYPE_CHECKING:
    from _socket import _Address

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Files that tests copy into a copy of the project (tests/test_step_recipe.py), not tests of this one.
collect_ignore = ["fixtures"]


#: Fixtures that train a model or open a local MLflow store (importing MLflow and using it costs seconds), and
#: what a module imports when its tests train.
_SLOW_FIXTURES = frozenset({"trained_model", "mlflow_workspace", "mlflow_tracking"})
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
        local_mlflow_registry = parameters.get("registry") == "local"  # tests/champion_world.py's `registry`
        if fixtures & _SLOW_FIXTURES or local_mlflow_registry or _module_trains(item):
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


@pytest.fixture
def clock() -> Clock:
    """The time the service reads, moved by the test."""
    return Clock()


@pytest.fixture(params=["memory", "azurite"])
def storage(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, container_name: str, table_prefix: str
) -> tuple[Ledger, BlobStore]:
    """The ledger and the datastore, in memory or on Azurite, with the service's environment naming them."""
    if request.param == "memory":
        monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", container_name)
        monkeypatch.setenv("LEDGER_TABLE_PREFIX", table_prefix)
        return Ledger(InMemoryTableService(), table_prefix), InMemoryDatastore()
    request.getfixturevalue("service_env")
    book = Ledger.from_connection_string(request.getfixturevalue("connection_string"), table_prefix)
    book.ensure_tables()
    store = Datastore.from_connection_string(request.getfixturevalue("connection_string"), container_name)
    store.ensure_container()
    return book, store


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow database (tracking and registry) with its tables made, once: making them costs seconds, a copy
    nothing. A test copies it to where its local registry, or its tracking URI, expects `mlflow.db`."""
    from shared.registry.local import LocalModelRegistry

    root = tmp_path_factory.mktemp("mlflow-template")
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            patch.delenv(variable, raising=False)
        LocalModelRegistry(root).model_versions("pid-symbol-detector")
    return root / "mlflow.db"


@pytest.fixture
def mlflow_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_db: Path) -> Iterator[Path]:
    """A local workspace (WORKSPACE_BACKEND=local) whose MLflow registry starts as a copy of the empty database."""
    from retrainer.settings import get_settings

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    shutil.copy(empty_mlflow_db, workspace / "mlflow.db")
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(workspace))
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(variable, raising=False)
    get_settings.cache_clear()
    yield workspace
    get_settings.cache_clear()


@pytest.fixture
def mlflow_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_db: Path) -> None:
    """MLflow tracking into this test's own database, a copy of the empty one."""
    shutil.copy(empty_mlflow_db, tmp_path / "tracking.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'tracking.db'}")


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
