"""The event-driven retraining service: new images become one run per batch, runs are followed to the end,
and the best model is promoted. Nothing is lost under duplicates, races and failures.

Adapters call it: the Event Grid trigger (`on_blob_created`, `on_workspace_event`), the timer (`tick`)
and the HTTP API (`submit`, `runs`, `best_model`). State lives in the ledger (Table Storage); the
pipeline is reached only through the workspace interface; the clock is injected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath

from azure.core.exceptions import ResourceModifiedError

from retrainer.datastore import BlobMissingError, Datastore
from retrainer.events import COMPLETING_APIS, WORKSPACE_RUN_EVENTS, parse_subject
from retrainer.images import IMAGE_FORMATS
from retrainer.ledger import Ledger, RunRecord, SlotTaken, now_utc
from retrainer.policy import BatchRule, PendingBatch, backoff_until, batch_due
from retrainer.promotion import BestModel, PromotionRecord
from retrainer.settings import Settings
from retrainer.workspace import PipelineRunner, RunState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmissionState:
    paused: bool
    reason: str


@dataclass(frozen=True)
class TickOutcome:
    """What one timer tick did: the state of each run it followed, the run it submitted, why it held back."""

    followed: dict[str, RunState] = field(default_factory=dict)
    submitted: str | None = None
    paused_reason: str | None = None


class RetrainingService:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        datastore: Datastore,
        runner: Callable[[], PipelineRunner],
        clock: Callable[[], datetime] = now_utc,
        on_image: Callable[[str], object] | None = None,
        publish: Callable[[BestModel], None] | None = None,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._datastore = datastore
        self._runner_factory = runner
        self._runner: PipelineRunner | None = None
        self._clock = clock
        self._on_image = on_image
        self._publish = publish
        self._last_event_check: float | None = None  # monotonic seconds: rate limiting, not policy
        self._event_check_lock = threading.Lock()

    @property
    def runner(self) -> PipelineRunner:
        """The pipeline runner, built on first use (the Azure ML SDK is slow to import)."""
        if self._runner is None:
            self._runner = self._runner_factory()
        return self._runner

    # --- events -----------------------------------------------------------------------------------

    def on_blob_created(self, subject: str, data: dict) -> bool:
        """Record an uploaded image once (by path and ETag); True when it is new."""
        if data.get("api") not in COMPLETING_APIS:
            return False
        path = self._image_path(subject)
        if path is None:
            return False
        etag = str(data.get("eTag") or data.get("etag") or "")
        if not etag:
            log.warning("BlobCreated for %s carries no eTag; ignored", path)
            return False
        new = self._ledger.record_image(path, etag, self._clock())
        if new and self._on_image is not None:
            self._on_image(path)  # converts a label that was waiting for this image
        return new

    def _image_path(self, subject: str) -> str | None:
        """The blob's path when the subject names an image in our container's image folder."""
        blob = parse_subject(subject)
        if blob is None or blob.container != self._settings.STORAGE_ACCOUNT_CONTAINER_NAME:
            return None
        if not blob.path.startswith(self._settings.IMAGE_FOLDER + "/"):
            return None
        return blob.path if PurePosixPath(blob.path).suffix.lower() in IMAGE_FORMATS else None

    def on_workspace_event(self, event_type: str, data: dict) -> bool:
        """Azure ML's own RunCompleted / RunStatusChanged for a run the service submitted: follow it now."""
        if event_type not in WORKSPACE_RUN_EVENTS:
            return False
        run_id = str(data.get("runId") or data.get("RunId") or "")
        if not run_id or self._ledger.run(run_id) is None:
            return False
        self.follow_run(run_id)
        return True

    # --- submission -------------------------------------------------------------------------------

    def submission_state(self) -> SubmissionState:
        control = self._ledger.control()
        if control.consecutive_failures >= self._settings.RETRAIN_MAX_CONSECUTIVE_FAILURES:
            return SubmissionState(
                True,
                f"automatic submission paused after {control.consecutive_failures} failed runs in a row; "
                "a successful manual run (POST /api/runs) resumes it",
            )
        if control.consecutive_failures and control.last_failure:
            until = backoff_until(
                control.consecutive_failures,
                control.last_failure,
                timedelta(minutes=self._settings.RETRAIN_BACKOFF_MINUTES),
            )
            if self._clock() < until:
                return SubmissionState(True, f"backing off after a failed run until {until.isoformat()}")
        return SubmissionState(False, "")

    def pending_batch(self) -> PendingBatch:
        pending = self._ledger.images(state="pending")
        seen = [image.seen for image in pending]
        return PendingBatch(len(pending), min(seen, default=None), max(seen, default=None))

    def submit_if_due(self, trigger: str) -> str | None:
        """Submit the pending batch when the policy says it is due and nothing stops it."""
        rule = BatchRule(
            self._settings.RETRAIN_MIN_NEW_IMAGES,
            timedelta(minutes=self._settings.RETRAIN_QUIET_MINUTES),
            timedelta(minutes=self._settings.RETRAIN_MAX_WAIT_MINUTES),
        )
        due, reason = batch_due(self.pending_batch(), rule, self._clock())
        if not due:
            return None
        state = self.submission_state()
        if state.paused:
            log.warning("batch due (%s) but not submitted: %s", reason, state.reason)
            return None
        try:
            return self.submit(trigger, reason)
        except SlotTaken:
            return None

    def submit_if_due_after_event(self, min_interval_s: float = 5.0) -> str | None:
        """From the event path, look at the batch at most once per `min_interval_s` per instance.

        A storm of uploads would otherwise read the pending list once per image; the timer still looks
        every few minutes, so a batch is never missed.
        """
        moment = time.monotonic()
        with self._event_check_lock:
            if self._last_event_check is not None and moment - self._last_event_check < min_interval_s:
                return None
            self._last_event_check = moment
        return self.submit_if_due("event")

    def submit(self, trigger: str, reason: str, force: bool = False) -> str:
        """Claim a slot (SlotTaken when none is free), submit, and bind the pending images.

        `force` may start up to RETRAIN_MAX_FORCED_RUNS runs beyond the active limit, never more.
        """
        limit = self._settings.RETRAIN_MAX_ACTIVE_RUNS + (self._settings.RETRAIN_MAX_FORCED_RUNS if force else 0)
        claim = self._ledger.claim_slot(limit, self._clock())
        images = self._ledger.images(state="pending")
        try:
            run_id = self.runner.submit_pipeline(f"{trigger}: {reason}")
        except Exception as error:  # the workspace boundary: record, keep the images pending, re-raise
            self._ledger.release_slot(claim, failed=True, when=self._clock())
            log.error("submission failed; %d images stay pending: %s", len(images), error)
            raise
        self._ledger.assign_images(images, "in_run", run_id)
        self._ledger.bind_slot(claim, run_id)
        moment = self._clock()
        self._ledger.save_run(
            RunRecord(
                run_id,
                trigger,
                reason,
                len(images),
                RunState.QUEUED,
                moment,
                [{"state": RunState.QUEUED.value, "at": moment.isoformat()}],
            )
        )
        log.info("submitted %s with %d images (%s)", run_id, len(images), reason)
        return run_id

    # --- following runs -----------------------------------------------------------------------------

    def tick(self) -> TickOutcome:
        """The timer: follow every active run, then submit a batch that became due."""
        followed = {}
        for run_id in self._ledger.control().active_runs:
            state = self.follow_run(run_id)
            if state is not None:
                followed[run_id] = state
        submitted = self.submit_if_due("timer")
        return TickOutcome(followed, submitted, self.submission_state().reason or None)

    def follow_run(self, run_id: str) -> RunState | None:
        """Record the run's progress; on its end promote or return its images. Handling an end twice changes nothing.

        None when the ledger holds no such run.
        """
        found = self._ledger.run_with_etag(run_id)
        if found is None:
            return None
        record, etag = found
        if record.state.terminal:
            return record.state
        try:
            status = self.runner.run_status(run_id)
        except Exception as error:  # a timeout or outage: try again at the next tick, lose nothing
            log.warning("status of %s unavailable (%s); will retry", run_id, error)
            return record.state
        if status.state == record.state:
            return record.state
        moment = self._clock()
        record.history.append({"state": status.state.value, "at": moment.isoformat(), "detail": status.detail})
        record.state = status.state
        if status.finished:
            record.ended_at = moment
            record.error = status.error or ""
            record.decision = status.decision
        try:
            self._ledger.save_run(record, etag=etag)
        except ResourceModifiedError:
            current = self._ledger.run(run_id)  # another handler recorded this change first
            return current.state if current else None
        if status.state == RunState.COMPLETED:
            self._complete(record)
        elif status.finished:
            self._fail(record)
        return record.state

    def _complete(self, record: RunRecord) -> None:
        self._ledger.assign_images(self._ledger.images(run_id=record.run_id), "trained", record.run_id)
        self._ledger.release_slot(record.run_id, failed=False)
        if record.decision is not None:
            self.record_promotion(record.decision, record.run_id)

    def _fail(self, record: RunRecord) -> None:
        images = self._ledger.images(run_id=record.run_id, state="in_run")
        self._ledger.assign_images(images, "pending", "")
        self._ledger.release_slot(record.run_id, failed=True, when=self._clock())
        log.error(
            "run %s ended %s (%s); %d images are pending again", record.run_id, record.state, record.error, len(images)
        )

    def record_promotion(self, decision: PromotionRecord, run_id: str) -> BestModel | None:
        """Keep the tag step's verdict as the best-model record (and publish ModelPromoted) when the best changed."""
        if not decision.best_version:
            return None
        current = self.best_model()
        if current and current.version == decision.best_version and current.name == decision.name:
            return current
        promoted = decision.promoted and decision.chosen_version == decision.best_version
        score = decision.candidate_score if promoted else decision.previous_best_score
        record = BestModel(
            name=decision.name, version=decision.best_version, score=score, run=run_id, time=self._clock().isoformat()
        )
        self._datastore.write_json(self._settings.BEST_MODEL_BLOB, record.model_dump())
        if self._publish is not None:
            self._publish(record)
        log.info("promoted %s version %s (mAP %s)", record.name, record.version, score)
        return record

    def best_model(self) -> BestModel | None:
        try:
            return BestModel.model_validate_json(self._datastore.read(self._settings.BEST_MODEL_BLOB))
        except BlobMissingError:
            return None

    def runs(self, limit: int = 50) -> list[RunRecord]:
        return self._ledger.runs(limit)

    def run(self, run_id: str) -> RunRecord | None:
        return self._ledger.run(run_id)
