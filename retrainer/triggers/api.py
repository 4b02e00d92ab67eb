"""HTTP API (function key): start and follow runs, see and steer the champion; the routes, as one table.

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

Each route's handler, with its typed request and answer bodies, is in `api_handlers.py`; how a request reaches
it and how errors become statuses, the same for every route, in `http_contract.py`. A new route is a row here
and a handler there (docs/service.md, "Adding a route").
"""

from __future__ import annotations

import azure.functions as func

from retrainer.triggers.http_contract import Route
from retrainer.triggers.http_contract import blueprint as contract_blueprint

HANDLERS = "retrainer.triggers.api_handlers"

ROUTES: tuple[Route, ...] = (
    Route("submit_run", "POST", "runs", f"{HANDLERS}:submit_run", status=202, location="/api/runs/{run_id}"),
    Route("list_runs", "GET", "runs", f"{HANDLERS}:list_runs"),
    Route("get_run", "GET", "runs/{run_id}", f"{HANDLERS}:get_run"),
    Route("cancel_run", "POST", "runs/{run_id}/cancel", f"{HANDLERS}:cancel_run"),
    Route("status_page", "GET", "status", f"{HANDLERS}:status_page"),
    Route("best_model", "GET", "models/best", f"{HANDLERS}:best_model"),
    Route("promote_model", "POST", "models/best", f"{HANDLERS}:promote_model"),
    Route("pin_model", "PUT", "models/best/pin", f"{HANDLERS}:pin_model"),
    Route("unpin_model", "DELETE", "models/best/pin", f"{HANDLERS}:unpin_model"),
)


def blueprint() -> func.Blueprint:
    """The routes as the host indexes them (read when the function app is built, so a test can add one)."""
    return contract_blueprint(ROUTES)
