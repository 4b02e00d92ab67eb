"""The HTTP API's contract: a table of routes, typed bodies, and one map from errors to statuses for every route.

A `Route` names its function (what the host indexes), method and path, and its handler as "module:function",
imported on the first request, so indexing loads azure.functions alone. The handler's parameters say what it
reads: the one annotated with a pydantic model is the request body (an empty body reads as `{}`), each other
one the route parameter of its name. It returns a pydantic model, the answer (strict JSON: a figure that is
not finite is the string "NaN", "Infinity" or "-Infinity", `records.json_document`), or an `HtmlPage`.

Whatever a handler raises is answered through `ERROR_STATUSES`: the first class in the error's MRO listed
there gives the status, and the error's text the one line of `{"error": ...}`. Anything else is a 502 that
says what failed, without secrets, and is logged. A body the model refuses is a 400 naming each field that
is wrong and what the body must be.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import azure.functions as func

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

Body = TypeVar("Body", bound="BaseModel")

#: Error class (`module.QualName`, so that nothing is imported before a request) -> the status it is answered
#: with. The first class of a raised error's MRO listed here decides; an error of no listed class is a 502.
ERROR_STATUSES: dict[str, int] = {
    "retrainer.triggers.http_contract.BadBody": 400,
    "retrainer.champion.authority.BadRequest": 400,
    "retrainer.triggers.http_contract.NotFound": 404,
    "retrainer.champion.authority.VersionNotFound": 404,
    "retrainer.triggers.http_contract.Conflict": 409,
    "retrainer.ledger.slot.SlotTaken": 409,
    "retrainer.submission.SubmissionConflict": 409,
    "retrainer.champion.authority.ChampionError": 409,
    "retrainer.datastore.LockBusy": 409,  # another change held the champion's lock: try again
    "retrainer.champion.record.UnreadableRecordError": 500,
}
#: The longest error text an answer carries.
MAX_ERROR_CHARS = 1000


class BadBody(ValueError):
    """The request's body is not what the route reads; the message says what it must be."""


class NotFound(LookupError):
    """What the request names does not exist."""


class Conflict(RuntimeError):
    """The request is refused in the state things are in (the message says why and what to do)."""


@dataclass(frozen=True)
class HtmlPage:
    """An answer that is a web page, not JSON."""

    text: str


@dataclass(frozen=True)
class Route:
    """One HTTP function: `/api/<path>` (`{name}` is a route parameter) answered by `handler`."""

    name: str  # what the host indexes, and in words what failed ("submit run failed: ...")
    method: str
    path: str
    handler: str  # "module:function"
    status: int = 200  # the answer's status when the handler returns
    location: str = ""  # a Location header, formatted with the answer's fields: "/api/runs/{run_id}"

    @property
    def action(self) -> str:
        return self.name.replace("_", " ")


def blueprint(routes: Iterable[Route]) -> func.Blueprint:
    """The routes as the functions the host indexes: function key, one method each."""
    functions = func.Blueprint()
    for route in routes:
        trigger = functions.route(route=route.path, methods=[route.method], auth_level=func.AuthLevel.FUNCTION)
        functions.function_name(route.name)(trigger(_endpoint(route)))
    return functions


def _endpoint(route: Route) -> Callable[[func.HttpRequest], func.HttpResponse]:
    def endpoint(req: func.HttpRequest) -> func.HttpResponse:
        return answer(route, req)

    endpoint.__name__ = endpoint.__qualname__ = route.name
    return endpoint


def answer(route: Route, req: func.HttpRequest) -> func.HttpResponse:
    """Call the route's handler with what the request holds; its answer, or its error through the map."""
    try:
        handler = _handler(route.handler)
        result = handler(**_arguments(handler, req))
    except Exception as error:  # every route's boundary: mapped, or a 502 without secrets
        return _error_answer(route, req, error)
    if isinstance(result, HtmlPage):
        return func.HttpResponse(result.text, status_code=route.status, mimetype="text/html", charset="utf-8")
    document = result.model_dump()
    headers = {"Location": route.location.format(**document)} if route.location else None
    return _json(document, route.status, headers)


def _handler(reference: str) -> Callable[..., Any]:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def _arguments(handler: Callable[..., Any], req: func.HttpRequest) -> dict[str, object]:
    from pydantic import BaseModel

    hints = typing.get_type_hints(handler)
    arguments: dict[str, object] = {}
    for name in inspect.signature(handler).parameters:
        kind = hints.get(name)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            arguments[name] = read_body(kind, req.get_body())
        else:
            arguments[name] = req.route_params.get(name, "")
    return arguments


def read_body(model: type[Body], raw: bytes) -> Body:
    """The body as `model`; BadBody naming what is wrong and what the body must be."""
    from pydantic import ValidationError

    try:
        document = json.loads(raw) if raw.strip() else {}
    except ValueError as error:  # not JSON, or not UTF-8 text
        where = f"line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else "UTF-8"
        raise BadBody(f"the body must be JSON, which this is not ({where}); {body_shape(model)}") from None
    if not isinstance(document, dict):
        raise BadBody(f"the body is JSON but not an object; {body_shape(model)}")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise BadBody(f"{field_problems(model, error)}; {body_shape(model)}") from None


def body_shape(model: type[BaseModel]) -> str:
    """'the body must be a JSON object like {...} ('reason' a string of at most 500 characters, ...)'."""
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    like = f" like {json.dumps(examples[0])}" if isinstance(examples, list) and examples else ""
    fields = ", ".join(f"'{name}' {field.description}" for name, field in model.model_fields.items())
    return f"the body must be a JSON object{like} ({fields})"


def field_problems(model: type[BaseModel], error: ValidationError) -> str:
    """Each field that is wrong and what it must be, in the model's words (its fields' descriptions)."""
    problems = []
    for item in error.errors(include_url=False):
        name = str(item["loc"][0]) if item["loc"] else ""
        field = model.model_fields.get(name)
        problem = f"'{name}' must be {field.description}" if field else item["msg"]
        if problem not in problems:
            problems.append(problem)
    return "; ".join(problems)


def status_of(error: BaseException) -> int | None:
    """The status `ERROR_STATUSES` gives the error (the first of its classes listed); None: a 502."""
    for kind in type(error).__mro__:
        status = ERROR_STATUSES.get(f"{kind.__module__}.{kind.__qualname__}")
        if status is not None:
            return status
    return None


def _error_answer(route: Route, req: func.HttpRequest, error: Exception) -> func.HttpResponse:
    from retrainer.redact import redact

    message = " ".join(redact(str(error)).split())[:MAX_ERROR_CHARS]
    status = status_of(error)
    if status is not None:
        return _json({"error": message}, status)
    # The workspace, the registry, the topic or storage failed: say so, without secrets (log included).
    log.error("%s failed: %s: %s", route.action, type(error).__name__, message, extra=dict(req.route_params))
    return _json({"error": f"{route.action} failed: {message}"}, 502)


def _json(body: object, status: int, headers: dict[str, str] | None = None) -> func.HttpResponse:
    from shared.records import json_document

    return func.HttpResponse(json_document(body), status_code=status, mimetype="application/json", headers=headers)
