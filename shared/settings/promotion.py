"""The promotion rule's settings: how a challenger is scored against the champion and when it wins."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from shared.settings.checks import SETTINGS_CONFIG


class PromotionSettings(BaseSettings):
    """How the tag step compares the challenger with the champion on the holdout, and where it runs."""

    model_config = SETTINGS_CONFIG

    MIN_MAP_IMPROVEMENT: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="How much a new model's mAP@0.5 must beat the best one's to be promoted: "
        "the lower bound of the interval must clear it.",
    )
    PROMOTION_CONFIDENCE_LEVEL: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Confidence of the paired bootstrap interval on the challenger's mAP minus the champion's, "
        "on the holdout.",
    )
    PROMOTION_BOOTSTRAP_RESAMPLES: int = Field(
        default=1000, ge=100, description="Paired bootstrap resamples of the holdout images."
    )
    # Scoring is bounded twice, so a holdout that only grows never pushes a run past its deadline:
    # by images (a seeded sample, the same run after run) and by minutes.
    PROMOTION_MAX_HOLDOUT_IMAGES: int = Field(
        default=200,
        ge=1,
        description="Holdout images a decision scores at most: a fixed seeded sample, the same from run to run.",
    )
    PROMOTION_SCORING_MINUTES: float = Field(
        default=60,
        gt=0,
        description="Minutes the tag step may spend scoring, counted from its start; past them the images both "
        "models scored decide.",
    )
    PROMOTION_MIN_HOLDOUT_IMAGES: int = Field(
        default=10,
        ge=1,
        description="Holdout images both models must have scored for a promotion; fewer, and the champion stays.",
    )
    MIN_CLASS_INSTANCES: int = Field(
        default=20,
        ge=1,
        description="Symbols of a class on the scored holdout images for the per-class guard to watch it.",
    )
    MAX_CLASS_AP_DROP: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="AP@0.5 a watched class may lose, beyond doubt, before a challenger that is better overall is "
        "kept out and the champion stays.",
    )
    PROMOTION_COMPUTE_NAME: str | None = Field(
        default=None,
        description="Compute of the tag step, which scores both models; unset: TRAINING_GPU_COMPUTE_NAME "
        "(a CPU takes minutes a sheet).",
    )
