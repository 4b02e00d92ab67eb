"""HTTP API (function auth level): start a run by hand and report runs and the best model.

POST /api/runs          {"reason": "...", "force": false}  -> 202 + Location, 409 when a run is active or
                        another submission took the pending images at the same moment
GET  /api/runs          recent runs, pending images, whether auto-submission is paused (a run whose row this
                        release cannot read has state "unknown", its `stored_state` and the `problem`)
GET  /api/runs/{run_id}
POST /api/runs/{run_id}/cancel   stops an active run; its images are pending again (not a failure); 409 for a run
                                 this release cannot read
GET  /api/models/best
POST /api/models/best            {"version": "3", "reason": "...", "force": false}: make a version the champion by
                                 hand (a rollback when it was best before); 404 no such version, 409 refused
PUT  /api/models/best/pin        {"reason": "..."}: the champion stays while runs still train and compare
DELETE /api/models/best/pin      {"reason": "..."} (optional): runs decide again
GET  /api/status                 the operator's status page (HTML)

Every answer is strict JSON: a figure that is not a finite number is the string "NaN", "Infinity" or "-Infinity"
(as the records write it; JavaScript's Number() reads it back), never a bare NaN token, which JSON.parse refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from retrainer.champion.authority import ChampionAuthority, Outcome

MAX_REASON_CHARS = 500  # the ledger's bound on a run's reason
#: Who the history names for a change made through this API (the function key names no person).
HTTP_ACTOR = "operator (HTTP API)"

log = logging.getLogger(__name__)

bp = func.Blueprint()


def _json(body: object, status: int, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """Strict JSON: a figure that is not finite is the string "NaN", "Infinity" or "-Infinity" (`json_document`)."""
    from retrainer.records import json_document

    return func.HttpResponse(json_document(body), status_code=status, mimetype="application/json", headers=headers)


@bp.function_name("submit_run")
@bp.route(route="runs", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def submit_run(req: func.HttpRequest) -> func.HttpResponse:
    try:
        body = req.get_json() if req.get_body() else {}
    except ValueError:
        return _json({"error": 'the body must be JSON, like {"reason": "new symbols", "force": false}'}, 400)
    if not isinstance(body, dict):
        return _json({"error": "the body must be a JSON object"}, 400)
    reason, force = body.get("reason", "manual run"), body.get("force", False)
    if not isinstance(reason, str) or not isinstance(force, bool):
        return _json({"error": "'reason' must be a string and 'force' a boolean"}, 400)
    if len(reason) > MAX_REASON_CHARS:
        return _json({"error": f"'reason' is longer than {MAX_REASON_CHARS} characters"}, 400)
    from retrainer import bootstrap
    from retrainer.ledger.slot import SlotTaken
    from retrainer.redact import redact
    from retrainer.submission import SubmissionConflict

    try:
        run_id = bootstrap.retraining().submit("manual", reason, force=force)
    except SlotTaken as taken:
        hint = "" if force else '; send "force": true to start another (up to RETRAIN_MAX_FORCED_RUNS extra runs)'
        return _json({"error": f"no submission slot is free ({taken}){hint}"}, 409)
    except SubmissionConflict as conflict:
        return _json({"error": str(conflict)}, 409)
    except Exception as error:  # the workspace refused or failed: say so, without secrets (log included)
        message = redact(str(error))[:1000]
        log.error("manual submission failed: %s: %s", type(error).__name__, message)
        return _json({"error": f"submission failed: {message}"}, 502)
    return _json({"run_id": run_id, "state": "queued"}, 202, {"Location": f"/api/runs/{run_id}"})


@bp.function_name("list_runs")
@bp.route(route="runs", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    from retrainer import bootstrap

    retraining = bootstrap.retraining()
    state = retraining.submission_state()
    return _json(
        {
            "runs": [run.as_dict() for run in bootstrap.ledger().runs.rows()],
            "pending_images": retraining.pending_batch().count,
            "auto_submission": {"paused": state.paused, "reason": state.reason or None},
        },
        200,
    )


@bp.function_name("get_run")
@bp.route(route="runs/{run_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    from retrainer import bootstrap
    from retrainer.events import is_run_id
    from retrainer.ledger.runs import UnreadableRunError

    run_id = req.route_params.get("run_id", "")
    try:
        run = bootstrap.ledger().runs.get(run_id) if is_run_id(run_id) else None
    except UnreadableRunError as unreadable:
        return _json(unreadable.row.as_dict(), 200)
    return _json(run.as_dict(), 200) if run else _json({"error": "no such run"}, 404)


@bp.function_name("cancel_run")
@bp.route(route="runs/{run_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def cancel_run(req: func.HttpRequest) -> func.HttpResponse:
    from retrainer import bootstrap
    from retrainer.events import is_run_id
    from retrainer.ledger.runs import UnreadableRunError
    from retrainer.redact import redact

    run_id = req.route_params.get("run_id", "")
    if not is_run_id(run_id):
        return _json({"error": "no such run"}, 404)
    try:
        state = bootstrap.retraining().cancel(run_id)
    except UnreadableRunError as unreadable:
        return _json({"error": f"not canceled: {unreadable}; the release that wrote it can cancel it"}, 409)
    except Exception as error:  # the workspace refused or failed: say so, without secrets
        message = redact(str(error))[:1000]
        log.error("cancel of %s failed: %s: %s", run_id, type(error).__name__, message, extra={"run_id": run_id})
        return _json({"error": f"cancel failed: {message}"}, 502)
    if state is None:
        return _json({"error": "no such run"}, 404)
    return _json({"run_id": run_id, "state": str(state)}, 200)


@bp.function_name("status_page")
@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def status_page(req: func.HttpRequest) -> func.HttpResponse:
    from retrainer import bootstrap
    from retrainer.status_page import render_status_page

    snapshot = bootstrap.status_view().snapshot()
    return func.HttpResponse(render_status_page(snapshot), status_code=200, mimetype="text/html", charset="utf-8")


@bp.function_name("best_model")
@bp.route(route="models/best", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def best_model(req: func.HttpRequest) -> func.HttpResponse:
    from retrainer import bootstrap
    from retrainer.champion.record import UnreadableRecordError, read_best_model

    try:
        best = read_best_model(bootstrap.datastore(), bootstrap.get_settings().BEST_MODEL_BLOB)
    except UnreadableRecordError as error:
        return _json({"error": str(error)}, 500)
    return _json(best.model_dump(), 200) if best else _json({"error": "no model has been promoted yet"}, 404)


def _object(req: func.HttpRequest, example: str, *, optional: bool = False) -> dict | func.HttpResponse:
    """The request's JSON object, or the 400 to answer (one line, with an example of a good body)."""
    try:
        body = req.get_json() if req.get_body() else ({} if optional else None)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _json({"error": f"the body must be a JSON object, like {example}"}, 400)
    return body


def _text(body: dict, key: str, *, required: bool) -> str | None:
    """A string field (a number is taken as its text for a version); None when it is missing and optional.

    ValueError with the one line to answer when it is missing, empty or of another type."""
    value = body.get(key)
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{key}' must be a non-empty string")
    if len(value) > MAX_REASON_CHARS:
        raise ValueError(f"'{key}' is longer than {MAX_REASON_CHARS} characters")
    return value


def _champion_call(action: str, call: Callable[[ChampionAuthority], Outcome]) -> func.HttpResponse:
    """Run one of the operator's controls: 200 with what it did, 404 / 409 for a refusal, 502 when the registry or
    storage failed (without secrets)."""
    from retrainer import bootstrap
    from retrainer.champion.authority import BadRequest, ChampionError, VersionNotFound
    from retrainer.redact import redact

    try:
        outcome = call(bootstrap.champion())
    except BadRequest as refused:
        return _json({"error": str(refused)}, 400)
    except VersionNotFound as missing:
        return _json({"error": str(missing)}, 404)
    except ChampionError as refused:
        return _json({"error": str(refused)}, 409)
    except Exception as error:  # the registry, the topic or storage failed: say so, without secrets
        message = redact(str(error))[:1000]
        log.error("%s failed: %s: %s", action, type(error).__name__, message)
        return _json({"error": f"{action} failed: {message}"}, 502)
    return _json(outcome.as_dict(), 200)


@bp.function_name("promote_model")
@bp.route(route="models/best", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def promote_model(req: func.HttpRequest) -> func.HttpResponse:
    body = _object(req, '{"version": "3", "reason": "version 4 misses gate valves", "force": false}')
    if isinstance(body, func.HttpResponse):
        return body
    try:
        version, reason = _text(body, "version", required=True), _text(body, "reason", required=True)
    except ValueError as error:
        return _json({"error": str(error)}, 400)
    force = body.get("force", False)
    if not isinstance(force, bool):
        return _json({"error": "'force' must be a boolean"}, 400)
    return _champion_call(
        "promotion", lambda controls: controls.promote(str(version), str(reason), HTTP_ACTOR, force=force)
    )


@bp.function_name("pin_model")
@bp.route(route="models/best/pin", methods=["PUT"], auth_level=func.AuthLevel.FUNCTION)
def pin_model(req: func.HttpRequest) -> func.HttpResponse:
    body = _object(req, '{"reason": "audit until Friday"}')
    if isinstance(body, func.HttpResponse):
        return body
    try:
        reason = _text(body, "reason", required=True)
    except ValueError as error:
        return _json({"error": str(error)}, 400)
    return _champion_call("pin", lambda controls: controls.pin(str(reason), HTTP_ACTOR))


@bp.function_name("unpin_model")
@bp.route(route="models/best/pin", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
def unpin_model(req: func.HttpRequest) -> func.HttpResponse:
    body = _object(req, '{"reason": "audit done"}', optional=True)
    if isinstance(body, func.HttpResponse):
        return body
    try:
        reason = _text(body, "reason", required=False) or ""
    except ValueError as error:
        return _json({"error": str(error)}, 400)
    return _champion_call("unpin", lambda controls: controls.unpin(HTTP_ACTOR, reason))
