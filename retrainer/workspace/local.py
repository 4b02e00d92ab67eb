"""The local pipeline runner: each run a detached process over folders under the workspace folder.

`LocalPipelineRunner` starts a run (`local_runner`, which runs the steps) and reads its `status.json`;
the models and data assets the steps register live in the local registry (`shared.registry.local`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from shared.promotion import PromotionRecord
from shared.records import RunState, RunStatus

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
