"""The records every layer shares: where a run is, what the service knows of it, and what the registry holds.

Below the ledger, the service, the status page, both workspace backends and the pipeline steps, all
of which import it; it imports nothing of theirs. A run's state and status come from the workspace;
the service keeps its record of each run (with the history of the states it reached) in the ledger;
data assets and model versions are what the steps register and the service reports.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

from shared.promotion import PromotionRecord


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


class RunEvent(TypedDict, total=False):
    """One entry of a run's history: a state it reached, when, and the backend's detail (the step).

    Made only by `RunRecord.enter`."""

    state: RunState
    at: str
    detail: str


@dataclass
class RunRecord:
    """The service's record of a run it submitted, as the ledger keeps it."""

    run_id: str
    trigger: str
    reason: str
    image_count: int
    state: RunState
    submitted_at: datetime
    history: list[RunEvent] = field(default_factory=list)
    error: str = ""
    decision: PromotionRecord | None = None
    ended_at: datetime | None = None
    #: When an active run is looked up for the last time: past it, the run is failed or freed with a reason.
    deadline: datetime | None = None
    #: True once a completed run's promotion record is written (retried by the timer until then).
    promotion_done: bool = False

    def enter(self, state: RunState, at: datetime, detail: str | None = None) -> None:
        """Move the run to `state` and add it to the history, with the backend's `detail` when there is one."""
        event: RunEvent = {"state": state, "at": at.isoformat()}
        if detail is not None:
            event["detail"] = detail
        self.history.append(event)
        self.state = state

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "reason": self.reason,
            "image_count": self.image_count,
            "state": self.state.value,
            "submitted_at": self.submitted_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "history": self.history,
            "error": self.error or None,
            "decision": self.decision.model_dump() if self.decision else None,
            "deadline": self.deadline.isoformat() if self.deadline else None,
        }


@dataclass(frozen=True)
class UnreadableRun:
    """A run's row this release cannot read: a state a newer release wrote (say "suspended"), or a damaged row.

    Shown as unknown and skipped: never followed, promoted, canceled or rewritten here, so the release that
    wrote it still finds it as it left it. A damaged row is also reported as a fault where the service meets it."""

    run_id: str
    stored_state: str
    problem: str

    @property
    def of_a_newer_release(self) -> bool:
        """The row names a state this release does not know: a newer release wrote it (not damage)."""
        return bool(self.stored_state) and self.stored_state not in {state.value for state in RunState}

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "state": "unknown", "stored_state": self.stored_state, "problem": self.problem}


def json_document(value: object, indent: int | None = None) -> str:
    """Strict JSON, which every client parses (JSON.parse refuses the bare NaN and Infinity Python writes).

    A float that is not finite is written as the string records write (`"NaN"`, `"Infinity"`, `"-Infinity"`),
    which JavaScript's `Number()` reads back as the value (null would read as 0); anything else JSON cannot
    hold (a time, an enum) as its text.
    """
    return json.dumps(_finite_or_named(value), indent=indent, default=str, allow_nan=False)


def _finite_or_named(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite_or_named(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_named(item) for item in value]
    return value


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
#: How many validation images the version's figures were measured on when it was trained (register_model
#: writes it where the trainer says: the local one). "0": not validated, and the version has no metric tags.
VALIDATION_IMAGES_TAG = "val_images"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    tags: dict[str, str]
    uri: str  # azureml:<name>:<version> on Azure ML; the stored MLflow model folder locally

    @property
    def is_best(self) -> bool:
        return self.tags.get(BEST_MODEL_TAG) == "true"

    @property
    def validated(self) -> bool:
        """False for a version trained with no validation images: it has no validation figure to show."""
        return self.tags.get(VALIDATION_IMAGES_TAG) != "0"
