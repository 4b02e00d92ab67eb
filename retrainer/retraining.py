"""The event-driven retraining service: new images become one run per batch, runs are followed to the end,
and the best model is promoted. Nothing is lost under duplicates, races and failures.

Adapters call it: the Event Grid trigger (`on_image_uploaded`, `on_run_changed`), the timer (`tick`),
the HTTP API and the `retrain` command (`submit`, `cancel`, `submission_state`). State lives in the
ledger (Table Storage); how a run is submitted under races is `retrainer/submission.py`; the pipeline
is reached only through the workspace interface; the clock is injected. What people read (runs, the
best model, the status page) they read from the ledger and the datastore themselves.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import TypeVar

from azure.core.exceptions import ResourceModifiedError

from retrainer.champion.authority import ChampionAuthority
from retrainer.events import BlobRef, ImageUploaded, RunChanged
from retrainer.images import IMAGE_FORMATS
from retrainer.ledger import Ledger
from retrainer.ledger.images import ImageState
from retrainer.ledger.rows import now_utc
from retrainer.ledger.runs import UnreadableRunError
from retrainer.ledger.slot import SlotTaken
from retrainer.policy import BatchRule, HoldRule, PendingBatch, SubmissionState, batch_due, submission_state
from retrainer.redact import describe_error, redact
from retrainer.settings import Settings
from retrainer.submission import SubmissionConflict, Submitter, cancel_quietly
from retrainer.telemetry import Metrics
from retrainer.workspace import PipelineRunner
from shared.records import RunRecord, RunState, RunStatus, UnreadableRun

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class TickFailure:
    """One part of a timer tick that failed (the others still ran): what it was doing, and the error."""

    part: str
    error: Exception

    def __str__(self) -> str:
        return f"{self.part}: {describe_error(self.error)}"


@dataclass(frozen=True)
class TickOutcome:
    """What one timer tick did: the state of each run it followed, the run it submitted, why it held back,
    and the parts that failed."""

    followed: dict[str, RunState] = field(default_factory=dict)
    submitted: str | None = None
    paused_reason: str | None = None
    failures: list[TickFailure] = field(default_factory=list)


class RetrainingService:
    """Decides when to submit, follows runs to their end, and records promotions."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        runner: Callable[[], PipelineRunner],
        champion: Callable[[], ChampionAuthority],
        clock: Callable[[], datetime] = now_utc,
        on_image: Callable[[str], object] | None = None,
        sweep_waiting: Callable[[], object] | None = None,
        metrics: Metrics | None = None,
        event_check_interval: float = 5.0,
    ) -> None:
        """`champion`: the champion's authority, which records what a completed run changed (built on first use:
        on Azure ML its registry client is slow to import). `event_check_interval`: from the event path, the
        pending batch is looked at once per this many seconds per instance at most (`submit_if_due_after_event`)."""
        self._settings = settings
        self._ledger = ledger
        self._runner_factory = runner
        self._runner: PipelineRunner | None = None
        self._champion_factory = champion
        self._champion: ChampionAuthority | None = None
        self._clock = clock
        self._on_image = on_image
        self._sweep_waiting = sweep_waiting
        self._metrics = metrics or Metrics()
        self._batch_rule = BatchRule.from_settings(settings)
        self._hold_rule = HoldRule.from_settings(settings)
        self._event_check_interval = event_check_interval
        self._last_event_check: float | None = None  # monotonic seconds: rate limiting, not policy
        self._event_check_lock = threading.Lock()
        self._submitter = Submitter(settings, ledger, lambda: self.runner, clock, self._metrics)

    @property
    def runner(self) -> PipelineRunner:
        """The pipeline runner, built on first use (the Azure ML SDK is slow to import)."""
        if self._runner is None:
            self._runner = self._runner_factory()
        return self._runner

    @property
    def champion(self) -> ChampionAuthority:
        if self._champion is None:
            self._champion = self._champion_factory()
        return self._champion

    # --- events -----------------------------------------------------------------------------------

    def on_image_uploaded(self, command: ImageUploaded) -> bool:
        """Record an uploaded image once (by path and ETag); True when it is new.

        When converting the label that waited for this image fails, the record is taken back and
        the error raised, so Event Grid redelivers and the conversion is tried again (should even
        that fail, the timer's sweep of waiting labels still converts it). A duplicate costs one
        refused insert and converts nothing.
        """
        path = self._image_path(command.blob)
        if path is None:
            return False
        if not self._ledger.images.record(path, command.etag, self._clock()):
            return False
        if self._on_image is not None:
            try:
                self._on_image(path)  # converts a label that was waiting for this image
            except Exception:
                self._ledger.images.forget(path, command.etag)
                raise
        return True

    def _image_path(self, blob: BlobRef) -> str | None:
        """The blob's path when it is an image in our container's image folder."""
        if blob.container != self._settings.STORAGE_ACCOUNT_CONTAINER_NAME:
            return None
        if not blob.path.startswith(self._settings.IMAGE_FOLDER + "/"):
            return None
        return blob.path if PurePosixPath(blob.path).suffix.lower() in IMAGE_FORMATS else None

    def on_run_changed(self, command: RunChanged) -> bool:
        """Azure ML's own RunCompleted / RunStatusChanged for a run the service submitted: follow it now.

        False (nothing done) for a run the ledger has no record of, or one this release cannot read."""
        try:
            return self.follow_run(command.run_id) is not None
        except UnreadableRunError as unreadable:
            log.warning("run event skipped: %s", unreadable, extra={"run_id": command.run_id})
            return False

    # --- submission -------------------------------------------------------------------------------

    def submission_state(self) -> SubmissionState:
        """Whether failed runs hold automatic submission back (backing off, or paused), and why."""
        control = self._ledger.slot.read()
        return submission_state(control.consecutive_failures, control.last_failure, self._hold_rule, self._clock())

    def pending_batch(self) -> PendingBatch:
        batch = PendingBatch.of(image.seen for image in self._ledger.images.pending())
        self._metrics.pending_images.set(batch.count)
        return batch

    def submit_if_due(self, trigger: str) -> str | None:
        """Submit the pending batch when the policy says it is due and nothing stops it."""
        due, reason = batch_due(self.pending_batch(), self._batch_rule, self._clock())
        if not due:
            return None
        state = self.submission_state()
        if state.paused:
            log.warning("batch due (%s) but not submitted: %s", reason, state.reason)
            return None
        try:
            return self.submit(trigger, reason, batch_only=True)
        except SlotTaken:
            return None
        except SubmissionConflict as conflict:  # another instance submitted this batch: nothing to do
            log.info("batch due (%s) but not submitted: %s", reason, conflict)
            return None

    def submit_if_due_after_event(self) -> str | None:
        """From the event path, look at the batch at most once per `event_check_interval` seconds per instance.

        A storm of uploads would otherwise read the pending list once per image; the timer still looks
        every few minutes, so a batch is never missed.
        """
        moment = time.monotonic()
        with self._event_check_lock:
            if self._last_event_check is not None and moment - self._last_event_check < self._event_check_interval:
                return None
            self._last_event_check = moment
        return self.submit_if_due("event")

    def submit(self, trigger: str, reason: str, force: bool = False, *, batch_only: bool = False) -> str:
        """Submit the pending images as one run (see `Submitter.submit`): SlotTaken when no slot is free,
        SubmissionConflict when another submission took the images first."""
        return self._submitter.submit(trigger, reason, force, batch_only=batch_only)

    # --- following runs -----------------------------------------------------------------------------

    def tick(self) -> TickOutcome:
        """The timer: settle stale claims, follow every active run, finish promotions, sweep waiting
        labels, then submit a batch that became due.

        Each part (and each run) is attempted on its own: one that fails is logged with what it was
        doing and reported in the outcome, and the rest of the tick still runs, so no single bad
        record or unreachable backend stops runs being followed, promoted or submitted.
        """
        failures: list[TickFailure] = []

        def attempt(part: str, action: Callable[[], _T]) -> _T | None:
            try:
                return action()
            except Exception as error:  # the timer's boundary, one part at a time: logged and reported
                failure = TickFailure(part, error)
                log.error("tick: %s; the rest of the tick goes on", failure)
                failures.append(failure)
                return None

        attempt("settle stale claims", self._submitter.reconcile_claims)
        followed: dict[str, RunState] = {}
        for run_id in attempt("read the active runs", self._active_runs) or []:
            state = attempt(f"follow run {run_id}", functools.partial(self._follow_active_run, run_id))
            if state is not None:
                followed[run_id] = state
        attempt("finish promotions", self._finish_promotions)
        if self._sweep_waiting is not None:
            attempt("sweep waiting labels", self._sweep_waiting)
        submitted = attempt("submit a due batch", functools.partial(self.submit_if_due, "timer"))
        submission = attempt("read the submission state", self.submission_state)
        paused_reason = (submission.reason or None) if submission else None
        return TickOutcome(followed, submitted, paused_reason, failures)

    def _active_runs(self) -> list[str]:
        return self._ledger.slot.read().active_runs

    def _follow_active_run(self, run_id: str) -> RunState | None:
        try:
            state = self.follow_run(run_id)
        except UnreadableRunError as unreadable:
            if not unreadable.row.of_a_newer_release:
                raise  # damage: a failure of this part of the tick, reported
            # Skipped with its slot: the release that wrote it settles it.
            log.warning("tick: %s; skipped, its submission slot stays taken", unreadable, extra={"run_id": run_id})
            return None
        if state is None:  # a slot held by a run the ledger has no record of: free it, say so
            log.error("run %s holds a submission slot but has no record; the slot is freed", run_id)
            self._ledger.slot.release(run_id)
        return state

    def follow_run(self, run_id: str) -> RunState | None:
        """Record the run's progress; on its end promote or return its images. Handling an end twice changes nothing.

        None when the ledger holds no such run; UnreadableRunError (nothing done) for a run this release cannot read.
        """
        found = self._ledger.runs.get_with_etag(run_id)
        if found is None:
            return None
        record, etag = found
        if record.state.terminal:
            return record.state
        moment = self._clock()
        overdue = record.deadline is not None and moment > record.deadline
        try:
            status = self.runner.run_status(run_id)
        except Exception as error:  # a timeout, an outage or a broken backend: retry until the deadline
            log.warning("status of %s unavailable (%s); will retry", run_id, redact(str(error)[:500]))
            if not overdue:
                return record.state
            status = RunStatus(run_id, RunState.FAILED, "unknown", f"no status by the deadline: {str(error)[:300]}")
        if overdue and not status.finished:
            cancel_quietly(self.runner, run_id)  # failed in the ledger either way
            status = RunStatus(
                run_id,
                RunState.FAILED,
                status.detail,
                f"still {status.state} at its deadline {record.deadline:%Y-%m-%d %H:%M} UTC; canceled",
            )
        if status.state == record.state:
            return record.state
        record.enter(status.state, moment, status.detail)
        if status.finished:
            record.ended_at = moment
            record.error = status.error or ""
            record.decision = status.decision
        try:
            self._ledger.runs.save(record, etag=etag)
        except ResourceModifiedError:
            current = self._ledger.runs.get(run_id)  # another handler recorded this change first
            return current.state if current else None
        if status.state == RunState.COMPLETED:
            self._complete(record)
        elif status.finished:
            self._fail(record)
        return record.state

    def _complete(self, record: RunRecord) -> None:
        self._ledger.images.assign(self._ledger.images.of_run(record.run_id), ImageState.TRAINED, record.run_id)
        self._ledger.slot.release(record.run_id, failed=False)
        self._finish_promotion(record)

    def _finish_promotion(self, record: RunRecord) -> None:
        """Record what a completed run's tag step changed; a failure is retried by the next tick."""
        if record.decision is None or record.promotion_done:
            return
        try:
            before = self.champion.record()
            after = self.champion.record_run(record.decision, record.run_id)
        except Exception as error:  # storage, the registry or the topic failed: the next tick tries again
            log.error("promotion of %s not recorded yet: %s", record.run_id, redact(str(error)[:500]))
            return
        if after is not None and (before is None or before.version != after.version):
            self._metrics.models_promoted.add(1)
            log.info("the champion is %s version %s (mAP %s)", after.name, after.version, after.score)
        record.promotion_done = True
        self._ledger.runs.save(record)

    def _finish_promotions(self) -> None:
        for record in self._ledger.runs.rows(limit=20):
            if isinstance(record, UnreadableRun):  # one unreadable row never holds back the others' promotions
                log.warning("finish promotions: run %s skipped: %s", record.run_id, record.problem)
            elif record.state == RunState.COMPLETED and not record.promotion_done:
                self._finish_promotion(record)

    def _fail(self, record: RunRecord) -> None:
        """Return the run's images to pending; a failure counts toward back-off, a cancellation does not."""
        images = self._ledger.images.of_run(record.run_id)
        self._ledger.images.assign(images, ImageState.PENDING, "")
        canceled = record.state == RunState.CANCELED
        self._ledger.slot.release(record.run_id, failed=None if canceled else True, when=self._clock())
        if not canceled:
            self._metrics.runs_failed.add(1)
        log.log(
            logging.WARNING if canceled else logging.ERROR,  # a cancellation is an operator's choice, not a fault
            "run %s ended %s (%s); %d images are pending again",
            record.run_id,
            record.state,
            redact(record.error[:500]),
            len(images),
            extra={"run_id": record.run_id},
        )

    def cancel(self, run_id: str) -> RunState | None:
        """Cancel an active run: the backend stops it, its images are pending again, no failure is counted.

        Returns the run's state afterwards (unchanged when it had already ended), None for no such run;
        UnreadableRunError (nothing done) for a run this release cannot read.
        """
        record = self._ledger.runs.get(run_id)
        if record is None:
            return None
        if record.state.terminal:
            return record.state
        self.runner.cancel_run(run_id)
        return self.follow_run(run_id)
