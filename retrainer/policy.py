"""Promotion policy (pure): when a newly trained model replaces the best one."""

from __future__ import annotations

from dataclasses import dataclass


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
