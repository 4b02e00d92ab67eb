"""What the status page shows, read from the ledger, the best-model record and the label map alone.

The view reads for itself and decides nothing: whether submission is held back comes from the same
rule the service applies (`retrainer/policy.py`) to the same ledger row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from retrainer.champion.record import current_best_model
from retrainer.datastore import BlobStore
from retrainer.ledger import Ledger
from retrainer.ledger.rows import now_utc
from retrainer.policy import HoldRule, PendingBatch, SubmissionState, submission_state
from retrainer.serving.status import read_serving_status
from retrainer.settings import Settings
from retrainer.status_page import StatusSnapshot
from shared.records import RunRecord, UnreadableRun

log = logging.getLogger(__name__)


class StatusView:
    """Assembles the status page's snapshot."""

    def __init__(
        self, ledger: Ledger, datastore: BlobStore, settings: Settings, clock: Callable[[], datetime] = now_utc
    ) -> None:
        self._ledger = ledger
        self._datastore = datastore
        self._settings = settings
        self._clock = clock

    def snapshot(self, limit: int = 100) -> StatusSnapshot:
        """The latest `limit` runs (one key range; those this release cannot read apart), pending images,
        submission state, the best model (with the pin), the class names, the champion's latest changes (one key
        range) and what serves it: seven independent reads, made at once, so the page waits for the slowest only."""
        with ThreadPoolExecutor(max_workers=7, thread_name_prefix="status-view") as reads:
            runs_read = reads.submit(self._ledger.runs.rows, limit)
            pending_read = reads.submit(self._pending)
            state_read = reads.submit(self._submission_state)
            best_read = reads.submit(current_best_model, self._datastore, self._settings.BEST_MODEL_BLOB)
            names_read = reads.submit(self._class_names)
            history_read = reads.submit(self._ledger.champion.latest, 10)
            serving_read = reads.submit(read_serving_status, self._datastore, self._settings.SERVING_STATUS_BLOB)
            rows, pending, state = runs_read.result(), pending_read.result(), state_read.result()
            best, class_names, history = best_read.result(), names_read.result(), history_read.result()
            serving = serving_read.result()
        runs = [row for row in rows if isinstance(row, RunRecord)]
        links = {run.run_id: self._report_link(run) for run in runs}
        return StatusSnapshot(
            generated_at=self._clock(),
            paused=state.paused,
            paused_reason=state.reason,
            pending_images=pending.count,
            oldest_pending=pending.oldest,
            runs=runs,
            best=best,
            report_links={run_id: link for run_id, link in links.items() if link},
            class_names=class_names,
            history=history,
            unreadable_runs=[row for row in rows if isinstance(row, UnreadableRun)],
            serving=serving,
        )

    def _pending(self) -> PendingBatch:
        return PendingBatch.of(image.seen for image in self._ledger.images.pending())

    def _submission_state(self) -> SubmissionState:
        control = self._ledger.slot.read()
        rule = HoldRule.from_settings(self._settings)
        return submission_state(control.consecutive_failures, control.last_failure, rule, self._clock())

    def _class_names(self) -> dict[str, str]:
        from retrainer.ingestion.ingest import read_label_map

        try:
            return read_label_map(self._datastore, self._settings.LABEL_MAP_BLOB) or {}
        except ValueError as error:  # an invalid label map: the page shows class ids instead
            log.warning("label map unreadable for the status page: %s", str(error)[:200])
            return {}

    def _report_link(self, run: RunRecord) -> str | None:
        if run.decision is not None and run.decision.challenger_report:
            return run.decision.challenger_report
        if self._settings.WORKSPACE_BACKEND != "local" and self._settings.names_a_workspace():
            subscription, group, workspace = self._settings.azureml_workspace()
            return (
                f"https://ml.azure.com/runs/{run.run_id}"
                f"?wsid=/subscriptions/{subscription}/resourcegroups/{group}/workspaces/{workspace}"
            )
        return None
