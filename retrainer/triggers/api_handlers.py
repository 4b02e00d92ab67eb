"""The HTTP API's handlers and their typed bodies (the routes are `retrainer/triggers/api.py`'s table).

Loaded on the first request. Each handler takes its request body as a model, its route parameters by name,
and returns its answer as a model; what it raises is answered by `http_contract.ERROR_STATUSES`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, StrictBool, StrictStr

from retrainer import bootstrap
from retrainer.champion.authority import Outcome
from retrainer.champion.record import BestModel, read_best_model
from retrainer.events import is_run_id
from retrainer.ledger.rows import MAX_REASON_CHARS
from retrainer.ledger.runs import UnreadableRunError
from retrainer.ledger.slot import SlotTaken
from retrainer.status_page import render_status_page
from retrainer.triggers.http_contract import Conflict, HtmlPage, NotFound

#: Who the history names for a change made through this API (the function key names no person).
HTTP_ACTOR = "operator (HTTP API)"

Reason = Annotated[
    StrictStr, Field(max_length=MAX_REASON_CHARS, description=f"a string of at most {MAX_REASON_CHARS} characters")
]
Text = Annotated[
    StrictStr,
    Field(
        pattern=r"\S",
        max_length=MAX_REASON_CHARS,
        description=f"a non-empty string of at most {MAX_REASON_CHARS} characters",
    ),
]
#: A version is text; a number is taken as its text ({"version": 3}), a boolean is not one.
Version = Annotated[
    Text,
    BeforeValidator(lambda value: str(value) if type(value) is int else value),
    Field(description="a non-empty string or a whole number"),
]
Force = Annotated[StrictBool, Field(description="a boolean")]


# --- runs ---------------------------------------------------------------------------------------------------


class SubmitRun(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "new symbols", "force": False}]})

    reason: Reason = "manual run"
    force: Force = False


class Queued(BaseModel):
    run_id: str
    state: str


class AutoSubmission(BaseModel):
    paused: bool
    reason: str | None


class RunList(BaseModel):
    runs: list[dict[str, Any]]  # each run's record (`RunRecord.as_dict`), or `UnreadableRun.as_dict`
    pending_images: int
    auto_submission: AutoSubmission


class RunDocument(RootModel[dict[str, Any]]):
    """A run's record as `RunRecord.as_dict` writes it (state "unknown" for a row this release cannot read)."""


class RunStateAnswer(BaseModel):
    run_id: str
    state: str


def submit_run(body: SubmitRun) -> Queued:
    """POST /api/runs: 202 and the run's Location; 409 when no slot is free or another submission took the images."""
    try:
        run_id = bootstrap.retraining().submit("manual", body.reason, force=body.force)
    except SlotTaken as taken:
        hint = "" if body.force else '; send "force": true to start another (up to RETRAIN_MAX_FORCED_RUNS extra runs)'
        raise Conflict(f"no submission slot is free ({taken}){hint}") from None
    return Queued(run_id=run_id, state="queued")


def list_runs() -> RunList:
    retraining = bootstrap.retraining()
    state = retraining.submission_state()
    return RunList(
        runs=[run.as_dict() for run in bootstrap.ledger().runs.rows()],
        pending_images=retraining.pending_batch().count,
        auto_submission=AutoSubmission(paused=state.paused, reason=state.reason or None),
    )


def get_run(run_id: str) -> RunDocument:
    try:
        run = bootstrap.ledger().runs.get(run_id) if is_run_id(run_id) else None
    except UnreadableRunError as unreadable:
        return RunDocument(unreadable.row.as_dict())
    if run is None:
        raise NotFound("no such run")
    return RunDocument(run.as_dict())


def cancel_run(run_id: str) -> RunStateAnswer:
    """POST /api/runs/{run_id}/cancel: stops an active run; its images are pending again (not a failure)."""
    if not is_run_id(run_id):
        raise NotFound("no such run")
    try:
        state = bootstrap.retraining().cancel(run_id)
    except UnreadableRunError as unreadable:
        raise Conflict(f"not canceled: {unreadable}; the release that wrote it can cancel it") from None
    if state is None:
        raise NotFound("no such run")
    return RunStateAnswer(run_id=run_id, state=str(state))


def status_page() -> HtmlPage:
    return HtmlPage(render_status_page(bootstrap.status_view().snapshot()))


# --- the champion: what it is, and the operator's controls ----------------------------------------------------


class Promote(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"version": "3", "reason": "version 4 misses gate valves", "force": False}]}
    )

    version: Version
    reason: Text
    force: Force = False


class Pin(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "audit until Friday"}]})

    reason: Text


class Unpin(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "audit done"}]})

    reason: Text | None = Field(
        default=None, description=f"a non-empty string of at most {MAX_REASON_CHARS} characters, or left out"
    )


class ChampionChanged(BaseModel):
    """What an operator's control did: the best-model record now, the history entry (None when nothing changed)."""

    best_model: BestModel | None
    change: dict[str, Any] | None  # `ChampionChange.as_dict`
    message: str

    @classmethod
    def of(cls, outcome: Outcome) -> ChampionChanged:
        change = outcome.change.as_dict() if outcome.change else None
        return cls(best_model=outcome.record, change=change, message=outcome.message)


def best_model() -> BestModel:
    best = read_best_model(bootstrap.datastore(), bootstrap.get_settings().BEST_MODEL_BLOB)
    if best is None:
        raise NotFound("no model has been promoted yet")
    return best


def promote_model(body: Promote) -> ChampionChanged:
    """POST /api/models/best: make a version the champion by hand (a rollback when it was best before)."""
    return ChampionChanged.of(
        bootstrap.retraining().champion.promote(body.version, body.reason, HTTP_ACTOR, force=body.force)
    )


def pin_model(body: Pin) -> ChampionChanged:
    """PUT /api/models/best/pin: the champion stays while runs still train and compare."""
    return ChampionChanged.of(bootstrap.retraining().champion.pin(body.reason, HTTP_ACTOR))


def unpin_model(body: Unpin) -> ChampionChanged:
    """DELETE /api/models/best/pin: runs decide again."""
    return ChampionChanged.of(bootstrap.retraining().champion.unpin(HTTP_ACTOR, body.reason or ""))
