"""The records every layer shares: where a run is, and what the registry holds.

Below the ledger, the service, the status page, both workspace backends and the pipeline steps, all
of which import it; it imports nothing of theirs. Run states and a run's status come from the
workspace and are kept by the ledger; data assets and model versions are what the steps register
and the service reports.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from retrainer.promotion import PromotionRecord


class RunState(enum.StrEnum):
    """The few run states the service reasons about; the last three are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELED)


#: Azure ML job status -> service run state.
AZUREML_STATES = {
    "NotStarted": RunState.QUEUED,
    "Queued": RunState.QUEUED,
    "Preparing": RunState.QUEUED,
    "Provisioning": RunState.QUEUED,
    "Starting": RunState.QUEUED,
    "Running": RunState.RUNNING,
    "Finalizing": RunState.RUNNING,
    "CancelRequested": RunState.RUNNING,
    "Completed": RunState.COMPLETED,
    "Failed": RunState.FAILED,
    "NotResponding": RunState.FAILED,
    "Canceled": RunState.CANCELED,
    "Paused": RunState.CANCELED,
}


def run_state(azureml_status: str) -> RunState:
    """The service's state for an Azure ML status; an unknown status counts as still running."""
    return AZUREML_STATES.get(azureml_status, RunState.RUNNING)


@dataclass(frozen=True)
class RunStatus:
    """Where a run is, as its backend answers."""

    run_id: str
    state: RunState
    detail: str = ""  # the backend's own status, or the step running now
    error: str | None = None
    decision: PromotionRecord | None = None  # the tag step's record, once the run completed
    started: str | None = None
    ended: str | None = None
    #: The label it was submitted with (it carries the submission's claim id).
    label: str = ""

    @property
    def finished(self) -> bool:
        return self.state.terminal


#: The class ids the service accepts (its label map), or None when it has none; read when a run is submitted.
AcceptedClasses = Callable[[], frozenset[str] | None]


@dataclass(frozen=True)
class DataAssetRef:
    name: str
    version: str
    uri: str  # azureml:<name>:<version> on Azure ML; a file:// URL of the stored copy locally
    tags: dict[str, str] = field(default_factory=dict)


#: The tag of the version currently promoted (the reference pipeline's name).
BEST_MODEL_TAG = "best_model"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    tags: dict[str, str]
    uri: str  # azureml:<name>:<version> on Azure ML; the stored MLflow model folder locally

    @property
    def is_best(self) -> bool:
        return self.tags.get(BEST_MODEL_TAG) == "true"
