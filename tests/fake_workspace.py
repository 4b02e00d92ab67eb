"""An in-memory workspace for service tests: the boundary where Azure ML (or the local runner) would be.

Tests steer it: set a run's status, make submit or status raise, count submissions.
"""

from __future__ import annotations

import threading
from pathlib import Path

from retrainer.workspace import RunStatus


class FakeWorkspace:
    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.statuses: dict[str, RunStatus] = {}
        self.fail_submit: Exception | None = None
        self.fail_status: Exception | None = None
        self._lock = threading.Lock()

    def submit_pipeline(self, label: str) -> str:
        if self.fail_submit is not None:
            raise self.fail_submit
        with self._lock:
            run_id = f"run-{len(self.submitted) + 1}"
            self.submitted.append(label)
            self.statuses[run_id] = RunStatus(run_id, "queued", "Queued")
        return run_id

    def run_status(self, run_id: str) -> RunStatus:
        if self.fail_status is not None:
            raise self.fail_status
        return self.statuses[run_id]

    def finish(self, run_id: str, state: str, decision: dict | None = None, error: str | None = None) -> None:
        self.statuses[run_id] = RunStatus(run_id, state, state.title(), error, decision)

    def cancel_run(self, run_id: str) -> None:
        self.finish(run_id, "canceled")

    def list_runs(self, limit: int = 20) -> list[RunStatus]:
        return list(self.statuses.values())[:limit]

    def local_model_path(self, version: object, scratch: Path) -> Path:
        raise NotImplementedError
