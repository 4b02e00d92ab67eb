"""The event-driven retraining service: new images become one run per batch, runs are followed to the end,
and the best model is promoted. Nothing is lost under duplicates, races and failures.

Adapters call it: the Event Grid trigger (`on_blob_created`, `on_workspace_event`), the timer (`tick`)
and the HTTP API (`submit`, `runs`, `best_model`). State lives in the ledger (Table Storage); the
pipeline is reached only through the workspace interface; the clock is injected.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import TypeVar

from azure.core.exceptions import ResourceModifiedError
from pydantic import ValidationError

from retrainer.datastore import BlobMissingError, Datastore
from retrainer.events import BlobRef, ImageUploaded, RunChanged, is_run_id
from retrainer.images import IMAGE_FORMATS
from retrainer.ledger import (
    MAX_REASON_CHARS,
    STALE_CLAIM,
    ImageRecord,
    ImagesMoved,
    ImageState,
    Ledger,
    RunRecord,
    SlotTaken,
    bounded,
    now_utc,
)
from retrainer.policy import BatchRule, PendingBatch, backoff_until, batch_due
from retrainer.promotion import BestModel, PromotionRecord
from retrainer.records import RunState, RunStatus
from retrainer.redact import redact
from retrainer.settings import Settings
from retrainer.telemetry import Metrics
from retrainer.workspace import PipelineRunner

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class SubmissionState:
    paused: bool
    reason: str


@dataclass(frozen=True)
class TickFailure:
    """One part of a timer tick that failed (the others still ran): what it was doing, and the error."""

    part: str
    error: Exception

    def __str__(self) -> str:
        return f"{self.part}: {describe_error(self.error)}"


def describe_error(error: BaseException) -> str:
    """Type, redacted message and where it was raised: a log line that locates a fault without a traceback
    (whose frames would carry unredacted text)."""
    frames = traceback.extract_tb(error.__traceback__)
    where = (
        f" (at {PurePosixPath(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    )
    return f"{type(error).__name__}: {redact(str(error))[:500]}{where}"


@dataclass(frozen=True)
class TickOutcome:
    """What one timer tick did: the state of each run it followed, the run it submitted, why it held back,
    and the parts that failed."""

    followed: dict[str, RunState] = field(default_factory=dict)
    submitted: str | None = None
    paused_reason: str | None = None
    failures: list[TickFailure] = field(default_factory=list)


class UnreadableRecordError(RuntimeError):
    """A record exists but cannot be read; the message says which and what repairs it."""


class SubmissionConflict(RuntimeError):
    """Another submission took the pending images at the same moment; this one submitted nothing and holds nothing."""


class UnusableRunIdError(RuntimeError):
    """The workspace named its run with an id the ledger cannot key; the run was canceled, nothing is held."""


class ClaimsUnsettled(RuntimeError):
    """Some stale claims could not be settled this time (each is logged); the next tick tries them again."""


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
        sweep_waiting: Callable[[], object] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._datastore = datastore
        self._runner_factory = runner
        self._runner: PipelineRunner | None = None
        self._clock = clock
        self._on_image = on_image
        self._publish = publish
        self._sweep_waiting = sweep_waiting
        self._metrics = metrics or Metrics()
        self._last_event_check: float | None = None  # monotonic seconds: rate limiting, not policy
        self._event_check_lock = threading.Lock()

    @property
    def runner(self) -> PipelineRunner:
        """The pipeline runner, built on first use (the Azure ML SDK is slow to import)."""
        if self._runner is None:
            self._runner = self._runner_factory()
        return self._runner

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
        if not self._ledger.record_image(path, command.etag, self._clock()):
            return False
        if self._on_image is not None:
            try:
                self._on_image(path)  # converts a label that was waiting for this image
            except Exception:
                self._ledger.forget_image(path, command.etag)
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
        """Azure ML's own RunCompleted / RunStatusChanged for a run the service submitted: follow it now."""
        if self._ledger.run(command.run_id) is None:
            return False
        self.follow_run(command.run_id)
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
        pending = self._ledger.pending_images()
        seen = [image.seen for image in pending]
        self._metrics.pending_images.set(len(pending))
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
            return self.submit(trigger, reason, batch_only=True)
        except SlotTaken:
            return None
        except SubmissionConflict as conflict:  # another instance submitted this batch: nothing to do
            log.info("batch due (%s) but not submitted: %s", reason, conflict)
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

    def submit(self, trigger: str, reason: str, force: bool = False, *, batch_only: bool = False) -> str:
        """Claim a slot (SlotTaken when none is free) and the pending images, submit, and bind them to the run.

        `force` may start up to RETRAIN_MAX_FORCED_RUNS runs beyond the active limit, never more. The
        loser of a race for the pending images gets SubmissionConflict and holds nothing (no slot, no
        image); with `batch_only` (automatic submissions) so does a submission that finds no pending
        image left. The intent is recorded before the workspace is called: the claim holds the images,
        and the run is labelled with the claim, so a submission whose bookkeeping failed afterwards is
        found again by `reconcile_claims` instead of being lost or submitted twice. A run id the ledger
        cannot key is refused at once (UnusableRunIdError): the run is canceled and nothing is held.
        """
        reason = bounded(reason, MAX_REASON_CHARS)
        limit = self._settings.RETRAIN_MAX_ACTIVE_RUNS + (self._settings.RETRAIN_MAX_FORCED_RUNS if force else 0)
        claim = self._ledger.claim_slot(limit, self._clock())
        images = self._claim_pending_images(claim, batch_only)
        try:
            run_id = self.runner.submit_pipeline(f"{trigger}: {reason} [{claim}]")
        except Exception as error:  # the workspace boundary: record, keep the images pending, re-raise
            self._ledger.assign_images(images, ImageState.PENDING, "")
            self._ledger.release_slot(claim, failed=True, when=self._clock())
            log.error("submission failed; %d images stay pending: %s", len(images), redact(str(error)))
            raise
        if not is_run_id(run_id):
            raise UnusableRunIdError(self._refuse_run(claim, run_id, images))
        self._adopt(claim, run_id, trigger, reason, images)
        self._metrics.runs_submitted.add(1, {"trigger": trigger})
        log.info("submitted %s with %d images (%s)", run_id, len(images), reason, extra={"run_id": run_id})
        return run_id

    def _claim_pending_images(self, claim: str, batch_only: bool) -> list[ImageRecord]:
        """Move the pending images to the claim; on a lost race give back what was moved and the slot."""
        try:
            images = self._ledger.assign_images(self._ledger.pending_images(), ImageState.IN_RUN, claim)
        except ImagesMoved as moved:
            self._ledger.assign_images(moved.moved, ImageState.PENDING, "")
            self._ledger.release_slot(claim)
            raise SubmissionConflict(
                "another submission took the pending images at the same moment; nothing was submitted and no "
                "slot is held: look at the runs, or try again"
            ) from None
        if batch_only and not images:
            self._ledger.release_slot(claim)
            raise SubmissionConflict("another submission took the pending batch; nothing was submitted")
        return images

    def _refuse_run(self, claim: str, run_id: str, images: list[ImageRecord]) -> str:
        """Undo a submission whose run id the ledger cannot key: cancel the run, free the images and the slot.

        Counted as a failed submission, so a backend that keeps doing it backs off and then pauses
        automatic submission instead of starting and canceling a run every tick. Returns what happened.
        """
        canceled = self._cancel_quietly(run_id)
        self._ledger.assign_images(images, ImageState.PENDING, "")
        self._ledger.release_slot(claim, failed=True, when=self._clock())
        message = (
            f"the workspace named its run {bounded(repr(run_id), 80)}, which the ledger cannot store as a run id "
            "(letters, digits, '_', '.', ':' and '-', at most 200 characters); "
            + ("the run was canceled" if canceled else "canceling it failed: cancel it in the workspace")
            + f", and the {len(images)} images are pending again"
        )
        log.error("%s (claim %s)", message, claim)
        return message

    def _adopt(self, claim: str, run_id: str, trigger: str, reason: str, images: list[ImageRecord]) -> None:
        """Bind a submitted run to its claim: its record first, so an active run always has one."""
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
                deadline=moment + timedelta(minutes=self._settings.run_timeout_minutes()),
            )
        )
        self._ledger.assign_images(images, ImageState.IN_RUN, run_id)
        self._ledger.bind_slot(claim, run_id)

    def reconcile_claims(self) -> list[str]:
        """Settle claims whose submitter vanished: adopt the run it submitted, or free the claim's images.

        Returns what was done, one line per claim. Each claim is settled on its own: one that cannot be
        (logged) does not keep the others waiting; ClaimsUnsettled afterwards says which failed.
        """
        settled: list[str] = []
        moment = self._clock()
        control = self._ledger.control()
        stale = [
            claim
            for claim, taken in control.active.items()
            if claim not in control.active_runs and moment - datetime.fromisoformat(taken) > STALE_CLAIM
        ]
        if not stale:
            return settled
        submitted = {status.label: status for status in self.runner.list_runs(limit=100)}
        unsettled: list[str] = []
        for claim in stale:
            found = next((status for label, status in submitted.items() if f"[{claim}]" in label), None)
            try:
                settled.append(f"{claim}: {self._settle_claim(claim, found.run_id if found else None)}")
            except Exception as error:  # one claim's fault, logged here; the others are still settled
                log.error(
                    "stale submission claim %s not settled; the next tick tries again: %s", claim, describe_error(error)
                )
                unsettled.append(f"{claim}: {describe_error(error)}")
        for line in settled:
            log.warning("stale submission claim %s", line)
        if unsettled:
            raise ClaimsUnsettled(f"{len(unsettled)} stale claim(s) not settled: {'; '.join(unsettled)}")
        return settled

    def _settle_claim(self, claim: str, run_id: str | None) -> str:
        images = self._ledger.run_images(claim)
        if run_id is None:
            self._ledger.assign_images(images, ImageState.PENDING, "")
            self._ledger.release_slot(claim)
            return f"nothing was submitted; {len(images)} images are pending again"
        if not is_run_id(run_id):
            return self._refuse_run(claim, run_id, images)
        self._adopt(claim, run_id, "recovered", f"submitted by a handler that stopped ({claim})", images)
        return f"adopted {run_id}"

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

        attempt("settle stale claims", self.reconcile_claims)
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
        return self._ledger.control().active_runs

    def _follow_active_run(self, run_id: str) -> RunState | None:
        state = self.follow_run(run_id)
        if state is None:  # a slot held by a run the ledger has no record of: free it, say so
            log.error("run %s holds a submission slot but has no record; the slot is freed", run_id)
            self._ledger.release_slot(run_id)
        return state

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
            self._cancel_quietly(run_id)  # failed in the ledger either way
            status = RunStatus(
                run_id,
                RunState.FAILED,
                status.detail,
                f"still {status.state} at its deadline {record.deadline:%Y-%m-%d %H:%M} UTC; canceled",
            )
        if status.state == record.state:
            return record.state
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

    def _cancel_quietly(self, run_id: str) -> bool:
        """Ask the workspace to stop a run; False (logged) when it could not."""
        try:
            self.runner.cancel_run(run_id)
        except Exception as error:  # the workspace boundary, best effort: the caller says what follows
            log.warning("could not cancel run %s: %s", bounded(repr(run_id), 80), redact(str(error)[:300]))
            return False
        return True

    def _complete(self, record: RunRecord) -> None:
        self._ledger.assign_images(self._ledger.run_images(record.run_id), ImageState.TRAINED, record.run_id)
        self._ledger.release_slot(record.run_id, failed=False)
        self._finish_promotion(record)

    def _finish_promotion(self, record: RunRecord) -> None:
        """Record the promotion of a completed run; a failure is retried by the next tick."""
        if record.decision is None or record.promotion_done:
            return
        try:
            self.record_promotion(record.decision, record.run_id)
        except Exception as error:  # storage or the topic failed: the next tick tries again
            log.error("promotion of %s not recorded yet: %s", record.run_id, redact(str(error)[:500]))
            return
        record.promotion_done = True
        self._ledger.save_run(record)

    def _finish_promotions(self) -> None:
        for record in self._ledger.runs(limit=20):
            if record.state == RunState.COMPLETED and not record.promotion_done:
                self._finish_promotion(record)

    def _fail(self, record: RunRecord) -> None:
        """Return the run's images to pending; a failure counts toward back-off, a cancellation does not."""
        images = self._ledger.run_images(record.run_id)
        self._ledger.assign_images(images, ImageState.PENDING, "")
        canceled = record.state == RunState.CANCELED
        self._ledger.release_slot(record.run_id, failed=None if canceled else True, when=self._clock())
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

        Returns the run's state afterwards (unchanged when it had already ended), None for no such run.
        """
        record = self._ledger.run(run_id)
        if record is None:
            return None
        if record.state.terminal:
            return record.state
        self.runner.cancel_run(run_id)
        return self.follow_run(run_id)

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
        # Announce first, then record: a failure between the two repeats the announcement at the next
        # tick (subscribers see ModelPromoted at least once) instead of never sending it.
        if self._publish is not None:
            self._publish(record)
        self._datastore.write_json(self._settings.BEST_MODEL_BLOB, record.model_dump())
        self._metrics.models_promoted.add(1)
        log.info("promoted %s version %s (mAP %s)", record.name, record.version, score)
        return record

    def best_model(self) -> BestModel | None:
        """The promoted model, or None when none was promoted or its record is unreadable (the next
        promotion rewrites it)."""
        try:
            return self.read_best_model()
        except UnreadableRecordError:
            return None

    def read_best_model(self) -> BestModel | None:
        """The promoted model; None when none was promoted; UnreadableRecordError when one was but its record
        cannot be read (the next promotion rewrites it)."""
        try:
            return BestModel.model_validate_json(self._datastore.read(self._settings.BEST_MODEL_BLOB))
        except BlobMissingError:
            return None
        except ValidationError as error:
            log.error("%s is not a valid best-model record: %s", self._settings.BEST_MODEL_BLOB, str(error)[:300])
            raise UnreadableRecordError(
                f"{self._settings.BEST_MODEL_BLOB} is not a valid best-model record: a model was promoted, "
                "and the next promotion rewrites the record"
            ) from None

    def now(self) -> datetime:
        """The service's clock (injected in tests)."""
        return self._clock()

    def runs(self, limit: int = 50) -> list[RunRecord]:
        return self._ledger.runs(limit)

    def run(self, run_id: str) -> RunRecord | None:
        return self._ledger.run(run_id)
