"""Pure policies of the service, with the clock passed in: promotion, batching and back-off."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    candidate_score: float
    incumbent_score: float | None


def decide_promotion(
    candidate_score: float, incumbent_score: float | None, min_improvement: float
) -> PromotionDecision:
    """The newcomer wins only when it beats the best by more than `min_improvement`.

    A tie keeps the incumbent (the reference pipeline let ties win): a promotion moves a deployment
    and the reports, which an equal score does not justify.
    """
    if incumbent_score is None:
        return PromotionDecision(True, "no model was tagged best yet", candidate_score, None)
    margin = candidate_score - incumbent_score
    if margin > min_improvement:
        reason = f"mAP {candidate_score:.4f} beats the best {incumbent_score:.4f} by {margin:.4f} > {min_improvement:g}"
        return PromotionDecision(True, reason, candidate_score, incumbent_score)
    reason = (
        f"mAP {candidate_score:.4f} does not beat the best {incumbent_score:.4f} "
        f"by more than {min_improvement:g} (difference {margin:+.4f}): the best model stays"
    )
    return PromotionDecision(False, reason, candidate_score, incumbent_score)


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
