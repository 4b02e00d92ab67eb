"""Single-flight submission: a run is submitted with a slot and the pending images claimed first.

Many handlers on many instances may submit at once; the ledger's conditional writes let only as many
runs start as there are slots (RETRAIN_MAX_ACTIVE_RUNS), and give each pending image to one of them.
The intent is recorded before the workspace is called: a claim holds the slot and the images, and the
run is labelled with the claim, so a submitter that stops half-way leaves a claim the timer settles
(`reconcile_claims`) instead of a lost or doubled run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from retrainer.events import is_run_id
from retrainer.ledger import Ledger
from retrainer.ledger.images import ImageRecord, ImagesMoved, ImageState
from retrainer.ledger.rows import MAX_REASON_CHARS, bounded
from retrainer.ledger.slot import STALE_CLAIM
from retrainer.redact import describe_error, redact
from retrainer.settings import Settings
from retrainer.telemetry import Metrics
from retrainer.workspace import PipelineRunner
from shared.records import RunRecord, RunState

log = logging.getLogger(__name__)


class SubmissionConflict(RuntimeError):
    """Another submission took the pending images at the same moment; this one submitted nothing and holds nothing."""


class UnusableRunIdError(RuntimeError):
    """The workspace named its run with an id the ledger cannot key; the run was canceled, nothing is held."""


class ClaimsUnsettled(RuntimeError):
    """Some stale claims could not be settled this time (each is logged); the next tick tries them again."""


def cancel_quietly(runner: PipelineRunner, run_id: str) -> bool:
    """Ask the workspace to stop a run; False (logged) when it could not."""
    try:
        runner.cancel_run(run_id)
    except Exception as error:  # the workspace boundary, best effort: the caller says what follows
        log.warning("could not cancel run %s: %s", bounded(repr(run_id), 80), redact(str(error)[:300]))
        return False
    return True


class Submitter:
    """Submits runs for the service, and settles the claims of submitters that stopped."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        runner: Callable[[], PipelineRunner],
        clock: Callable[[], datetime],
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._runner = runner
        self._clock = clock
        self._metrics = metrics

    @property
    def runner(self) -> PipelineRunner:
        return self._runner()

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
        claim = self._ledger.slot.claim(limit, self._clock())
        images = self._claim_pending_images(claim, batch_only)
        try:
            run_id = self.runner.submit_pipeline(f"{trigger}: {reason} [{claim}]")
        except Exception as error:  # the workspace boundary: record, keep the images pending, re-raise
            self._ledger.images.assign(images, ImageState.PENDING, "")
            self._ledger.slot.release(claim, failed=True, when=self._clock())
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
            images = self._ledger.images.assign(self._ledger.images.pending(), ImageState.IN_RUN, claim)
        except ImagesMoved as moved:
            self._ledger.images.assign(moved.moved, ImageState.PENDING, "")
            self._ledger.slot.release(claim)
            raise SubmissionConflict(
                "another submission took the pending images at the same moment; nothing was submitted and no "
                "slot is held: look at the runs, or try again"
            ) from None
        if batch_only and not images:
            self._ledger.slot.release(claim)
            raise SubmissionConflict("another submission took the pending batch; nothing was submitted")
        return images

    def _refuse_run(self, claim: str, run_id: str, images: list[ImageRecord]) -> str:
        """Undo a submission whose run id the ledger cannot key: cancel the run, free the images and the slot.

        Counted as a failed submission, so a backend that keeps doing it backs off and then pauses
        automatic submission instead of starting and canceling a run every tick. Returns what happened.
        """
        canceled = cancel_quietly(self.runner, run_id)
        self._ledger.images.assign(images, ImageState.PENDING, "")
        self._ledger.slot.release(claim, failed=True, when=self._clock())
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
        deadline = moment + timedelta(minutes=self._settings.run_timeout_minutes())
        record = RunRecord(run_id, trigger, reason, len(images), RunState.QUEUED, moment, deadline=deadline)
        record.enter(RunState.QUEUED, moment)
        self._ledger.runs.save(record)
        self._ledger.images.assign(images, ImageState.IN_RUN, run_id)
        self._ledger.slot.bind(claim, run_id)

    def reconcile_claims(self) -> list[str]:
        """Settle claims whose submitter vanished: adopt the run it submitted, or free the claim's images.

        Returns what was done, one line per claim. Each claim is settled on its own: one that cannot be
        (logged) does not keep the others waiting; ClaimsUnsettled afterwards says which failed.
        """
        settled: list[str] = []
        moment = self._clock()
        control = self._ledger.slot.read()
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
        images = self._ledger.images.of_run(claim)
        if run_id is None:
            self._ledger.images.assign(images, ImageState.PENDING, "")
            self._ledger.slot.release(claim)
            return f"nothing was submitted; {len(images)} images are pending again"
        if not is_run_id(run_id):
            return self._refuse_run(claim, run_id, images)
        self._adopt(claim, run_id, "recovered", f"submitted by a handler that stopped ({claim})", images)
        return f"adopted {run_id}"
