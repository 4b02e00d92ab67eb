"""Serving: an endpoint that follows the champion (retrainer/serving/)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from shared.settings.checks import SETTINGS_CONFIG


class ServingSettings(BaseSettings):
    """The endpoint that serves the champion: its size, canary, smoke test and back-off."""

    model_config = SETTINGS_CONFIG

    SERVING_ENDPOINT_NAME: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$",
        description="Azure ML managed online endpoint serving the champion (3-32 letters, digits, hyphens); unset, "
        "nothing is deployed. Locally `retrain serve` serves the champion regardless.",
    )
    SERVING_INSTANCE_TYPE: str = Field(
        default="Standard_DS3_v2",
        description="VM size of the endpoint's deployments; a GPU size (Standard_NC4as_T4_v3) for tiled "
        "full-resolution sheets.",
    )
    SERVING_INSTANCE_COUNT: int = Field(default=1, ge=1, le=20, description="Instances of each deployment.")
    SERVING_CANARY_PERCENT: int = Field(
        default=0,
        ge=0,
        le=99,
        description="Traffic share a new deployment gets first, for SERVING_CANARY_MINUTES (0: all at once after "
        "its smoke test).",
    )
    SERVING_CANARY_MINUTES: float = Field(
        default=30, gt=0, description="How long a canary share runs before the new deployment takes all traffic."
    )
    SERVING_SMOKE_SHEETS: int = Field(
        default=3, ge=1, le=20, description="Holdout sheets a new deployment scores before it takes traffic."
    )
    SERVING_SMOKE_TOLERANCE: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="How far below the champion's holdout mAP@0.5 the smoke sheets' mAP@0.5 may fall: it catches "
        "a broken deployment, not a slightly worse one.",
    )
    SERVING_RETRY_MINUTES: float = Field(
        default=15, gt=0, description="Back-off after a failed deployment or smoke test; doubles per failure, to 8x."
    )
    LOCAL_SERVING_ENVIRONMENT: Path = Field(
        default=Path(".venv-serving"),
        description="Virtual environment of the local endpoint's inference server (`make setup-serving` makes it).",
    )
    SERVING_STATUS_BLOB: str = Field(
        default="models/serving.json", description="Blob of what serves the champion: endpoint, version, state."
    )
