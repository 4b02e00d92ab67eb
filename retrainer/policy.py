"""Pure policies of the service, with the clock passed in: batching and back-off."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PendingBatch:
    count: int
    oldest: datetime | None
    newest: datetime | None


@dataclass(frozen=True)
class BatchRule:
    min_new_images: int
    quiet: timedelta
    max_wait: timedelta


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


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.1f} min"
