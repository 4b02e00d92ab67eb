"""The local model registry: versioned data assets and documents under a folder, and a real MLflow registry.

The registry is MLflow's, in a SQLite database under the workspace folder by default;
MLFLOW_REGISTRY_URI / MLFLOW_TRACKING_URI point it at another database or an MLflow server.
Registered model folders are copied under `<root>/models/`, so a version outlives its run folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.records import DataAssetRef, ModelVersion

#: SQLite registries this process has seen made and migrated (under the schema lock).
_MIGRATED: set[str] = set()
_ASSET_FILE = "asset.json"
_REGISTRY_RETRIES = 20


class LocalModelRegistry:
    """Versioned data assets under `<root>/data/`, and models in a real MLflow registry."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    # --- data assets -------------------------------------------------------------------------

    def register_data_asset(
        self, name: str, folder: Path, *, description: str, tags: dict[str, str], datastore: str | None = None
    ) -> DataAssetRef:
        """Copy the folder to `<root>/data/<name>/<version>/`; versions count up from 1, safely under races."""
        if not (folder / "MLTable").is_file():
            raise FileNotFoundError(f"{folder} is not an MLTable folder (no MLTable file)")
        asset_root = self.root / "data" / name
        asset_root.mkdir(parents=True, exist_ok=True)
        version = self._claim_next_version(asset_root)
        target = asset_root / version
        shutil.copytree(folder, target / "content")
        ref = DataAssetRef(name, version, (target / "content").as_uri(), dict(tags))
        entry = {
            "name": name,
            "version": version,
            "uri": ref.uri,
            "description": description,
            "tags": tags,
            "datastore": datastore,
            "created": datetime.now(UTC).isoformat(),
        }
        (target / _ASSET_FILE).write_text(json.dumps(entry, indent=2))
        return ref

    # --- versioned documents ------------------------------------------------------------------

    def latest_versioned_document(self, name: str) -> tuple[int, bytes] | None:
        folder = self.root / "documents" / name
        versions = [int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()] if folder.is_dir() else []
        return (max(versions), (folder / f"{max(versions)}.json").read_bytes()) if versions else None

    def create_document(self, name: str, version: str, content: bytes) -> bool:
        """Written aside, then linked into place: the link fails if the version exists, and is never half-written."""
        folder = self.root / "documents" / name
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".partial", delete=False) as partial:
            partial.write(content)
        try:
            os.link(partial.name, folder / f"{int(version)}.json")
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(partial.name)

    @staticmethod
    def _claim_next_version(asset_root: Path) -> str:
        versions = [int(p.name) for p in asset_root.iterdir() if p.name.isdigit()]
        candidate = max(versions, default=0) + 1
        while True:
            try:
                (asset_root / str(candidate)).mkdir()
                return str(candidate)
            except FileExistsError:
                candidate += 1

    # --- model registry (MLflow) ---------------------------------------------------------------

    @property
    def registry_uri(self) -> str:
        configured = os.environ.get("MLFLOW_REGISTRY_URI") or os.environ.get("MLFLOW_TRACKING_URI")
        return configured or f"sqlite:///{self.root / 'mlflow.db'}"

    def _client(self) -> Any:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        self.root.mkdir(parents=True, exist_ok=True)
        uri = self.registry_uri
        if not uri.startswith("sqlite:") or uri in _MIGRATED:
            return MlflowClient(tracking_uri=uri, registry_uri=uri)
        # MLflow makes and migrates a SQLite registry's tables on first use; two processes doing it at once
        # (`retrain serve` beside a run's steps) break alembic's migration. One process at a time does it.
        with open(self.root / ".mlflow-schema.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                client.search_registered_models(max_results=1)
                client.search_experiments(max_results=1)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        _MIGRATED.add(uri)
        return client

    def register_model(self, name: str, folder: Path, *, description: str, tags: dict[str, str]) -> ModelVersion:
        if not (folder / "MLmodel").is_file():
            raise FileNotFoundError(f"{folder} is not an MLflow model folder (no MLmodel file)")
        stored = self.root / "models" / name / uuid.uuid4().hex
        shutil.copytree(folder, stored)
        client = self._client()
        version = _retry_busy(lambda: self._create_version(client, name, stored, description, tags))
        return self._version(version)

    @staticmethod
    def _create_version(client: Any, name: str, source: Path, description: str, tags: dict[str, str]) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(name)
        except MlflowException as error:
            if "already exists" not in str(error).lower():
                raise
        return client.create_model_version(name, source=str(source), tags=tags, description=description)

    def model_versions(self, name: str) -> list[ModelVersion]:
        found = self._client().search_model_versions(f"name='{name}'")
        return sorted((self._version(v) for v in found), key=lambda v: int(v.version))

    def set_model_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        client = self._client()
        for key, value in tags.items():
            _retry_busy(lambda key=key, value=value: client.set_model_version_tag(name, version, key, value))

    @contextlib.contextmanager
    def promotion_lock(self, name: str) -> Iterator[None]:
        """An exclusive file lock: tag steps on this machine decide one at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".promotion-{name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def local_model_path(self, version: ModelVersion, scratch: Path) -> Path:
        folder = Path(version.uri)
        if not (folder / "MLmodel").is_file():  # as Azure ML's download: its files deleted since it was registered
            raise FileNotFoundError(f"model {version.name}:{version.version} has no MLmodel file at {folder}")
        return folder

    @staticmethod
    def _version(version: Any) -> ModelVersion:
        return ModelVersion(version.name, str(version.version), dict(version.tags), version.source)


def _retry_busy(action: Any) -> Any:
    """SQLite allows one writer at a time: concurrent steps retry briefly instead of failing."""
    for attempt in range(_REGISTRY_RETRIES):
        try:
            return action()
        except Exception as error:  # MLflow wraps SQLAlchemy's OperationalError in several ways
            if "database is locked" not in str(error) or attempt == _REGISTRY_RETRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
