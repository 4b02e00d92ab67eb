"""The function app as the host sees it: indexed bindings, and handlers called with real objects."""

from __future__ import annotations

import inspect
import json

import azurefunctions.extensions.bindings.blob as blob_binding
import pytest
from azurefunctions.extensions.base.meta import get_binding_registry

from retrainer.datastore import Datastore
from retrainer.ingestion.ingest import LabelIngestor
from tests.helpers import (
    blob_trigger_client,
    indexed_functions,
    jpeg_bytes,
    loaded_by_importing_function_app,
    read_jsonl,
)
from tests.npy_files import legacy_npy


def test_host_indexes_the_event_grid_blob_trigger_on_label_files() -> None:
    function = indexed_functions()["convert_label"]
    (binding,) = [json.loads(raw) for raw in function.get_raw_bindings()]
    assert binding == {
        "direction": "IN",
        "type": "blobTrigger",
        "name": "label",
        "path": "%STORAGE_ACCOUNT_CONTAINER_NAME%/%LABEL_FOLDER%/{name}.npy",
        "connection": "DATASTORE",
        "source": "EventGrid",
    }
    assert json.loads(function.get_function_json())["bindings"][0]["type"] == "blobTrigger"


def test_the_label_trigger_binds_a_blob_client_not_the_content() -> None:
    """The worker defers a binding (the host sends a reference, not the bytes) when the parameter's
    annotation is a type the extension registry supports: the same check, on the real registry."""
    function = indexed_functions()["convert_label"].get_user_function()
    annotation = inspect.signature(function).parameters["label"].annotation
    assert annotation is blob_binding.BlobClient
    assert get_binding_registry().check_supported_type(annotation)


def test_importing_the_function_app_loads_no_table_or_numpy_code() -> None:
    # azure.storage.blob does load: the label trigger's BlobClient type must exist when the worker indexes it.
    modules = ("numpy", "azure.data.tables", "pydantic", "retrainer.ledger")
    assert loaded_by_importing_function_app(modules) == []


def invoke_convert_label(container: str, path: str) -> None:
    function = indexed_functions()["convert_label"].get_user_function()
    function(blob_trigger_client(container, path))


@pytest.mark.usefixtures("service_env")
def test_blob_trigger_converts_an_uploaded_label(datastore: Datastore, container_name: str) -> None:
    label = legacy_npy([["Gate valve", [10, 10, 50, 30], "1"]])
    datastore.write("data/images/t1.jpg", jpeg_bytes(100, 100))
    datastore.write("data/labels/t1_symbols.npy", label)
    invoke_convert_label(container_name, "data/labels/t1_symbols.npy")
    (record,) = read_jsonl(datastore.read("data/labels/t1.jsonl"))
    assert record["label"][0]["bottomX"] == pytest.approx(0.5)


@pytest.mark.usefixtures("service_env")
def test_blob_trigger_checks_class_ids_against_the_stored_label_map(datastore: Datastore, container_name: str) -> None:
    label = legacy_npy([["Gate valve", [10, 10, 50, 30], "7"]])
    datastore.write("data/label_map.json", b'{"1": "Instrument/Valve/Gate valve"}')
    datastore.write("data/images/t2.jpg", jpeg_bytes(100, 100))
    datastore.write("data/labels/t2_symbols.npy", label)
    invoke_convert_label(container_name, "data/labels/t2_symbols.npy")
    reason = json.loads(datastore.read("quarantine/data/labels/t2_symbols.npy.reason.json"))
    assert "class id '7' is not in the label map" in reason["reason"] and reason["handler"] == "blob-trigger"


@pytest.mark.usefixtures("service_env")
def test_blob_trigger_then_image_landing_handler_completes_a_label_that_came_first(
    datastore: Datastore, container_name: str
) -> None:
    from retrainer import bootstrap

    label = legacy_npy([["Gate valve", [10, 10, 50, 30], "1"]])
    datastore.write("data/labels/t3_symbols.npy", label)
    invoke_convert_label(container_name, "data/labels/t3_symbols.npy")
    assert not datastore.exists("data/labels/t3.jsonl")
    datastore.write("data/images/t3.jpg", jpeg_bytes(100, 100))
    ingestor: LabelIngestor = bootstrap.label_ingestor(handler="image-landed")
    ingestor.ingest_image("data/images/t3.jpg")
    assert read_jsonl(datastore.read("data/labels/t3.jsonl"))[0]["image_url"] == "t3.jpg"


#: The API as it stands: each route's path and method, which clients rely on (a new route adds to it).
HTTP_ROUTES = {
    "submit_run": ("runs", ["POST"]),
    "list_runs": ("runs", ["GET"]),
    "get_run": ("runs/{run_id}", ["GET"]),
    "cancel_run": ("runs/{run_id}/cancel", ["POST"]),
    "status_page": ("status", ["GET"]),
    "best_model": ("models/best", ["GET"]),
    "promote_model": ("models/best", ["POST"]),
    "pin_model": ("models/best/pin", ["PUT"]),
    "unpin_model": ("models/best/pin", ["DELETE"]),
}


def http_bindings(path: str, method: str) -> list[dict]:
    """What the host indexes for a route: an HTTP trigger behind the function key, and the HTTP answer."""
    trigger = {"direction": "IN", "type": "httpTrigger", "name": "req", "methods": [method], "authLevel": "FUNCTION"}
    return [{**trigger, "route": path}, {"direction": "OUT", "type": "http", "name": "$return"}]


def test_host_indexes_event_grid_timer_and_http_triggers() -> None:
    from retrainer.triggers.api import ROUTES

    functions = indexed_functions()
    bindings = {name: [json.loads(raw) for raw in fn.get_raw_bindings()] for name, fn in functions.items()}
    assert set(bindings) == {"convert_label", "on_event", "monitor", *(route.name for route in ROUTES)}
    assert bindings["on_event"] == [{"direction": "IN", "type": "eventGridTrigger", "name": "event"}]
    (timer,) = bindings["monitor"]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%MONITOR_SCHEDULE%"
    assert timer["runOnStartup"] is False
    for route in ROUTES:
        assert bindings[route.name] == http_bindings(route.path, route.method), route.name
    indexed = {route.name: (route.path, [route.method]) for route in ROUTES}
    assert HTTP_ROUTES.items() <= indexed.items(), "a route clients use moved or went"
