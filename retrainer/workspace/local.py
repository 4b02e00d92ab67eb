"""Local workspace: versioned data assets under a folder, and a real MLflow model registry.

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
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from retrainer.promotion import PromotionRecord
from retrainer.records import DataAssetRef, ModelVersion, RunState, RunStatus

#: SQLite registries this process has seen made and migrated (under the schema lock).
_MIGRATED: set[str] = set()
_ASSET_FILE = "asset.json"
_REGISTRY_RETRIES = 20
STATUS_FILE = "status.json"


class LocalRunStatus(BaseModel):
    """A local run's `status.json`: written queued by the submitter, moved on by the run's runner process
    (`local_runner`), read by `LocalPipelineRunner`. Each write replaces the whole file atomically, so a
    reader never sees half of one; a field that is not here, or a value of the wrong type, is refused when
    written rather than misread later."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    label: str = ""
    state: RunState = RunState.QUEUED
    step: str | None = None  # the step running now
    started: str | None = None
    ended: str | None = None
    pid: int | None = None  # the runner process
    images: int | None = None  # downloaded from the datastore
    warm_start_from: str | None = None  # the champion's model folder training starts from
    error: str | None = None
    decision: PromotionRecord | None = None  # the tag step's record, once the run completed

    @classmethod
    def read(cls, run_dir: Path) -> LocalRunStatus:
        return cls.model_validate_json((run_dir / STATUS_FILE).read_text())

    def write(self, run_dir: Path) -> None:
        path = run_dir / STATUS_FILE
        partial = path.with_suffix(".tmp")
        partial.write_text(self.model_dump_json(indent=2))
        partial.replace(path)

    @classmethod
    def update(cls, run_dir: Path, **changes: object) -> LocalRunStatus:
        """The run's status with `changes` (validated), written back."""
        changed = cls.model_validate({**cls.read(run_dir).model_dump(), **changes})
        changed.write(run_dir)
        return changed


class LocalPipelineRunner:
    """Pipeline runs as detached local processes (see local_runner), one folder each under `<root>/runs/`."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def submit_pipeline(self, label: str) -> str:
        run_id = f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        run_dir = self.root / "runs" / run_id
        run_dir.mkdir(parents=True)
        submitted = datetime.now(UTC).isoformat(timespec="seconds")
        (run_dir / "run.json").write_text(json.dumps({"run_id": run_id, "label": label, "submitted": submitted}))
        LocalRunStatus(run_id=run_id, label=label).write(run_dir)
        # The runner inherits this process's settings (environment), so it reads the same datastore.
        child_env = {**os.environ, "LOCAL_WORKSPACE_DIR": str(self.root), "WORKSPACE_BACKEND": "local"}
        with open(run_dir / "runner.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "retrainer.workspace.local_runner", str(run_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,
            )
        (run_dir / "runner.pid").write_text(str(process.pid))
        threading.Thread(target=process.wait, daemon=True).start()  # reap it, so a dead runner reads as dead
        return run_id

    def run_status(self, run_id: str) -> RunStatus:
        run_dir = self._run_dir(run_id)
        status = LocalRunStatus.read(run_dir)
        state, error = status.state, status.error
        if not state.terminal and not _alive(run_dir):
            state, error = RunState.FAILED, "the runner process ended without finishing the run"
        return RunStatus(
            run_id, state, status.step or "", error, status.decision, status.started, status.ended, status.label
        )

    def cancel_run(self, run_id: str) -> None:
        run_dir = self._run_dir(run_id)
        if self.run_status(run_id).finished:
            return
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.killpg(int((run_dir / "runner.pid").read_text()), signal.SIGTERM)
        for _ in range(100):
            if self.run_status(run_id).finished:
                return
            time.sleep(0.05)

    def list_runs(self, limit: int = 20) -> list[RunStatus]:
        folders = (
            sorted((self.root / "runs").glob("run-*"), reverse=True)[:limit] if (self.root / "runs").exists() else []
        )
        return [self.run_status(folder.name) for folder in folders]

    def run_log(self, run_id: str, step: str) -> str:
        path = self._run_dir(run_id) / "logs" / f"{step}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run_dir(self, run_id: str) -> Path:
        run_dir = self.root / "runs" / run_id
        if "/" in run_id or not (run_dir / STATUS_FILE).exists():
            raise KeyError(f"no local run {run_id!r} under {self.root / 'runs'}")
        return run_dir


def _alive(run_dir: Path) -> bool:
    try:
        pid = int((run_dir / "runner.pid").read_text())
    except (FileNotFoundError, ValueError):
        return True  # submitted a moment ago; the pid file follows
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


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

    def latest_document(self, name: str) -> bytes | None:
        latest = self.latest_versioned_document(name)
        return latest[1] if latest else None

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
        return Path(version.uri)

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
