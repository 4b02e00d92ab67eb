"""The HTTP contract: a route added to the table (here from a fixture, editing no file) is indexed by the function
app with its binding, reads its typed body, and answers errors through the one map every route shares."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator

import azure.functions as func
import pytest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from retrainer.champion.authority import BadRequest, ChampionError, VersionNotFound
from retrainer.datastore import LockBusy
from retrainer.triggers import api
from retrainer.triggers.http_contract import ERROR_STATUSES, Conflict, NotFound, Route, status_of
from tests.helpers import indexed_functions


class Greeting(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Ada", "times": 2}]})

    name: StrictStr = Field(min_length=1, description="a non-empty string")
    times: StrictInt = Field(default=1, ge=1, le=3, description="a whole number from 1 to 3")


class Greeted(BaseModel):
    words: str
    score: float


def greet(body: Greeting, who: str) -> Greeted:
    """The fixture's handler: a body and a route parameter in, a typed answer out, the map's errors raised."""
    if who == "nobody":
        raise NotFound("no one answers to that")
    if who == "busy":
        raise Conflict("busy greeting someone else")
    if who == "storage":
        raise ConnectionError("the table is gone: AccountKey=c2VjcmV0; sig=abc")
    return Greeted(words=" ".join([f"hello {body.name} from {who}"] * body.times), score=float("nan"))


GREET = Route("greet", "POST", "greetings/{who}", f"{__name__}:greet", status=201, location="/api/greetings/{words}")


@pytest.fixture
def app_with_a_new_route() -> Iterator[None]:
    """The function app as the host builds it, with one more row in the routes table."""
    import function_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "ROUTES", (*api.ROUTES, GREET))
        importlib.reload(function_app)
        indexed_functions.cache_clear()
        yield
    importlib.reload(function_app)
    indexed_functions.cache_clear()


def call(name: str, body: bytes, **route_params: str) -> tuple[int, dict, func.HttpResponse]:
    request = func.HttpRequest("POST", "/api/x", headers={}, params={}, route_params=route_params, body=body)
    response = indexed_functions()[name].get_user_function()(request)
    return response.status_code, json.loads(response.get_body()), response


@pytest.mark.usefixtures("app_with_a_new_route")
def test_a_route_added_to_the_table_is_indexed_with_its_binding_and_answers_with_its_typed_body() -> None:
    function = indexed_functions()["greet"]
    assert [json.loads(raw) for raw in function.get_raw_bindings()] == [
        {
            "direction": "IN",
            "type": "httpTrigger",
            "name": "req",
            "methods": ["POST"],
            "authLevel": "FUNCTION",
            "route": "greetings/{who}",
        },
        {"direction": "OUT", "type": "http", "name": "$return"},
    ]
    assert {route.name for route in api.ROUTES} < set(indexed_functions()), "the other routes stay"
    status, body, response = call("greet", b'{"name": "Ada", "times": 2}', who="Bob")
    assert status == 201 and body == {"words": "hello Ada from Bob hello Ada from Bob", "score": "NaN"}
    assert response.headers["Location"] == "/api/greetings/hello Ada from Bob hello Ada from Bob"


@pytest.mark.usefixtures("app_with_a_new_route")
@pytest.mark.parametrize(
    ("request_body", "problem"),
    [
        (b"{not json", "the body must be JSON, which this is not (line 1 column 2)"),
        (b'["Ada"]', "the body is JSON but not an object"),
        (b"", "'name' must be a non-empty string"),
        (b'{"name": "Ada", "times": 9}', "'times' must be a whole number from 1 to 3"),
        (b'{"name": 7, "times": "2"}', "'name' must be a non-empty string; 'times' must be a whole number from 1 to 3"),
    ],
    ids=["not-json", "not-an-object", "empty", "out-of-range", "two-fields"],
)
def test_a_body_the_model_refuses_is_a_400_saying_what_is_wrong_and_what_the_body_must_be(
    request_body: bytes, problem: str
) -> None:
    status, body, _ = call("greet", request_body, who="Bob")
    shape = (
        'the body must be a JSON object like {"name": "Ada", "times": 2} '
        "('name' a non-empty string, 'times' a whole number from 1 to 3)"
    )
    assert status == 400 and body == {"error": f"{problem}; {shape}"}


@pytest.mark.usefixtures("app_with_a_new_route")
def test_errors_are_answered_through_the_one_map_and_anything_else_is_a_502_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert call("greet", b'{"name": "Ada"}', who="nobody")[:2] == (404, {"error": "no one answers to that"})
    assert call("greet", b'{"name": "Ada"}', who="busy")[:2] == (409, {"error": "busy greeting someone else"})
    with caplog.at_level("ERROR", logger="retrainer.triggers.http_contract"):
        status, body, _ = call("greet", b'{"name": "Ada"}', who="storage")
    assert status == 502 and body["error"].startswith("greet failed: the table is gone")
    assert "c2VjcmV0" not in body["error"] + caplog.text and "sig=abc" not in body["error"] + caplog.text
    assert "greet failed: ConnectionError" in caplog.text


def test_every_error_the_map_names_exists_and_a_subclass_takes_the_status_of_its_nearest_listed_class() -> None:
    """The map names classes by their dotted names (indexing imports none of them): a rename must fail here,
    not turn a 409 into a 502 in production."""
    for dotted in ERROR_STATUSES:
        module, _, name = dotted.rpartition(".")
        found = getattr(importlib.import_module(module), name)
        assert isinstance(found, type) and issubclass(found, Exception), dotted
    assert status_of(BadRequest("x")) == 400 and status_of(VersionNotFound("x")) == 404
    assert status_of(ChampionError("x")) == 409 and status_of(RuntimeError("x")) is None
    assert status_of(LockBusy("the champion's lock is held")) == 409, "busy, not broken: the operator retries"
