"""Pure policies of the service, with the clock passed in: batching, back-off and pausing.

The rules are built from the settings in one place each (`from_settings`); the service and the status
view apply the same rules to what they read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from retrainer.settings import Settings


@dataclass(frozen=True)
class PendingBatch:
    count: int
    oldest: datetime | None
    newest: datetime | None

    @classmethod
    def of(cls, seen: Iterable[datetime]) -> PendingBatch:
        """The batch of pending images first seen at these times."""
        times = list(seen)
        return cls(len(times), min(times, default=None), max(times, default=None))


@dataclass(frozen=True)
class BatchRule:
    min_new_images: int
    quiet: timedelta
    max_wait: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchRule:
        return cls(
            settings.RETRAIN_MIN_NEW_IMAGES,
            timedelta(minutes=settings.RETRAIN_QUIET_MINUTES),
            timedelta(minutes=settings.RETRAIN_MAX_WAIT_MINUTES),
        )


def batch_due(batch: PendingBatch, rule: BatchRule, now: datetime) -> tuple[bool, str]:
    """Submit when enough images have waited quietly, or when the oldest has waited too long."""
    if batch.count == 0 or batch.oldest is None or batch.newest is None:
        return False, "no pending images"
    if batch.count >= rule.min_new_images and now - batch.newest >= rule.quiet:
        return True, f"{batch.count} new images, none for {_minutes(now - batch.newest)}"
    if now - batch.oldest >= rule.max_wait:
        return True, f"the oldest of {batch.count} new images has waited {_minutes(now - batch.oldest)}"
    if batch.count < rule.min_new_images:
        return False, f"{batch.count} of {rule.min_new_images} images needed"
    return False, f"{batch.count} new images; waiting for {_minutes(rule.quiet)} without a new one"


def backoff_until(
    failures: int, last_failure: datetime, base: timedelta, cap: timedelta = timedelta(days=1)
) -> datetime:
    """After n failures in a row wait base * 2^(n-1), at most `cap`."""
    if failures <= 0:
        return last_failure
    return last_failure + min(base * (2 ** (failures - 1)), cap)


@dataclass(frozen=True)
class SubmissionState:
    paused: bool
    reason: str


@dataclass(frozen=True)
class HoldRule:
    """When failed runs hold automatic submission back: a back-off after each, a pause after too many in a row."""

    max_consecutive_failures: int
    backoff: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> HoldRule:
        return cls(settings.RETRAIN_MAX_CONSECUTIVE_FAILURES, timedelta(minutes=settings.RETRAIN_BACKOFF_MINUTES))


def submission_state(failures: int, last_failure: datetime | None, rule: HoldRule, now: datetime) -> SubmissionState:
    """Whether automatic submission is held back after `failures` failed runs in a row, and why."""
    if failures >= rule.max_consecutive_failures:
        return SubmissionState(
            True,
            f"automatic submission paused after {failures} failed runs in a row; "
            "a successful manual run (POST /api/runs) resumes it",
        )
    if failures and last_failure:
        until = backoff_until(failures, last_failure, rule.backoff)
        if now < until:
            return SubmissionState(True, f"backing off after a failed run until {until.isoformat()}")
    return SubmissionState(False, "")


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.1f} min"
