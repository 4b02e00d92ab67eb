"""The event-driven service: when a batch is due, how many runs fly, back-off, events and telemetry."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from shared.settings.checks import SETTINGS_CONFIG

#: What a run needs beyond training and scoring: queueing, cluster provisioning, the first build of the
#: steps' image, and the data and registry steps (minutes; a margin, not a measurement).
PIPELINE_OVERHEAD_MINUTES = 120


class ServiceSettings(BaseSettings):
    """Batching, single flight, timeouts and back-off, the ModelPromoted topic, Application Insights."""

    model_config = SETTINGS_CONFIG

    RETRAIN_MIN_NEW_IMAGES: int = Field(default=20, ge=1, description="New images that make a batch due.")
    RETRAIN_QUIET_MINUTES: float = Field(
        default=10, ge=0, description="Minutes without a new image before a batch is due."
    )
    RETRAIN_MAX_WAIT_MINUTES: float = Field(
        default=24 * 60, gt=0, description="A pending image waits at most this long, however few arrived."
    )
    RETRAIN_MAX_ACTIVE_RUNS: int = Field(default=1, ge=1, description="Runs in flight at once (1: single flight).")
    RETRAIN_MAX_FORCED_RUNS: int = Field(
        default=1,
        ge=0,
        description="Runs that `force` may start beyond RETRAIN_MAX_ACTIVE_RUNS (each one is a GPU run).",
    )
    RETRAIN_RUN_TIMEOUT_MINUTES: float | None = Field(
        default=None,
        gt=0,
        description="An active run with no result by then is canceled and failed; its images are pending again. "
        f"Unset: TRAINING_JOB_TIMEOUT_MINUTES + PROMOTION_SCORING_MINUTES + {PIPELINE_OVERHEAD_MINUTES}.",
    )
    RETRAIN_MAX_CONSECUTIVE_FAILURES: int = Field(
        default=3, ge=1, description="Failed runs in a row after which automatic submission pauses."
    )
    RETRAIN_BACKOFF_MINUTES: float = Field(
        default=15, ge=0, description="Minutes to wait after a failed run; doubles with each failure in a row."
    )
    MONITOR_SCHEDULE: str = Field(default="0 */5 * * * *", description="NCRONTAB schedule of the monitor timer.")
    EVENTGRID_TOPIC_ENDPOINT: str | None = Field(
        default=None, description="Event Grid topic that ModelPromoted events are sent to; unset, none are sent."
    )
    EVENTGRID_TOPIC_KEY: SecretStr | None = Field(
        default=None, description="Access key of that topic; without it the function's identity is used."
    )
    APPLICATIONINSIGHTS_CONNECTION_STRING: str | None = Field(
        default=None,
        description="Application Insights (set by the platform): logs, traces and metrics go there, with Entra auth.",
    )
    BEST_MODEL_BLOB: str = Field(default="models/best_model.json", description="Blob of the promoted model's record.")
