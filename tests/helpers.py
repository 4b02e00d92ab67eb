"""Small builders shared by tests."""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import azure.functions as func
import pytest
from PIL import Image

if TYPE_CHECKING:
    from azure.ai.ml._restclient.arm_ml_service.models import PipelineJob as RestPipelineJob
    from azure.ai.ml.entities import PipelineJob

    from retrainer.ledger import Ledger
    from retrainer.retraining import RetrainingService
    from shared.promotion import ClassGuard, PromotionRecord
    from shared.records import RunRecord


class Clock:
    """A clock a test moves by hand: the service reads the time only through it."""

    def __init__(self, now: datetime = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass(frozen=True)
class Posted:
    """One POST a `listening_server` received."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: object

    def events(self) -> list[dict[str, Any]]:
        """The body as Event Grid's JSON array of events."""
        assert isinstance(self.body, list), self.body
        return self.body


@contextmanager
def listening_server(status: int = 200) -> Iterator[tuple[str, list[Posted]]]:
    """A real HTTP server on loopback (an Event Grid topic, the Functions host's webhooks): its base URL, and
    every JSON POST it received, in order."""
    received: list[Posted] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(Posted(self.path, {name.lower(): value for name, value in self.headers.items()}, body))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with serving_in_background(HTTPServer(("127.0.0.1", 0), Handler)) as server:
        yield f"http://127.0.0.1:{server.server_port}", received


@contextmanager
def serving_in_background(server: HTTPServer) -> Iterator[HTTPServer]:
    """`server` answering on a thread of its own until the block ends; then stopped and its socket closed."""
    # shutdown() waits for the loop's next poll: at the default half second, every test would wait that long.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@functools.cache
def indexed_functions() -> dict[str, func.Function]:
    """What the host indexes; `get_functions()` may run once per app, as in the host."""
    import function_app

    return {str(fn.get_function_name()): fn for fn in function_app.app.get_functions()}


@functools.cache
def _loaded_by_a_cold_start() -> frozenset[str]:
    """Every module a fresh interpreter has loaded after `import function_app` (the host's cold start); one
    interpreter serves every test of a process."""
    code = "import json, sys, function_app; print(json.dumps(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return frozenset(json.loads(loaded))


def loaded_by_importing_function_app(modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after `import function_app` (the host's cold start)."""
    return sorted(module for module in modules if module in _loaded_by_a_cold_start())


def stored_run(ledger: Ledger, run_id: str) -> RunRecord:
    """The ledger's record of a run the test expects there."""
    run = ledger.runs.get(run_id)
    assert run is not None, f"the ledger has no run {run_id}"
    return run


def class_guard(decision: PromotionRecord | None) -> ClassGuard:
    """The per-class guard of a decision the test made with one."""
    assert decision is not None and decision.comparison is not None, "a decision without a comparison"
    assert decision.comparison.class_guard is not None, "a comparison without a class guard"
    return decision.comparison.class_guard


def jpeg_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, "JPEG")
    return buffer.getvalue()


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, "PNG")
    return buffer.getvalue()


def read_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def record(image: str, labels: list[str]) -> dict:
    """A per-image AutoML JSONL record with one small box per class id in `labels`."""
    boxes = [{"label": c, "topX": 0.1, "topY": 0.1, "bottomX": 0.2, "bottomY": 0.2, "isCrowd": 0} for c in labels]
    return {"image_url": image, "image_details": {"format": "jpg", "width": 100, "height": 100}, "label": boxes}


def deliver(
    service: RetrainingService,
    subject: object,
    data: dict[str, object],
    event_type: str = "Microsoft.Storage.BlobCreated",
) -> bool:
    """An event down the trigger's path: parsed into a command at the edge, then handed to the service."""
    from retrainer.events import Event, ImageUploaded, RunChanged, to_command

    command = to_command(Event("test-event", event_type, subject if isinstance(subject, str) else "", data))
    if isinstance(command, ImageUploaded):
        return bool(service.on_image_uploaded(command))
    if isinstance(command, RunChanged):
        return bool(service.on_run_changed(command))
    return False


#: The real `mltable` library lives in its own environment (made by `make setup`): its azureml-dataprep
#: pins azure-identity<=1.17.0, which the function app's blob binding extension (>=1.19) cannot share.
MLTABLE_PYTHON = Path(__file__).resolve().parent.parent / ".venv-mltable" / "bin" / "python"

_LOAD_WITH_MLTABLE = """
import json, sys
import mltable
frame = mltable.load(sys.argv[1]).to_pandas_dataframe()
images = []
for url in frame["image_url"]:
    if url is None:  # mltable found no stream at the URL (records of a test whose images do not exist)
        images.append(None)
        continue
    with url.open() as stream:
        images.append(stream.read().decode("latin-1"))
print(json.dumps({"columns": list(frame.columns), "rows": len(frame), "images": images}))
"""


def load_with_mltable(folder: Path) -> dict:
    """An MLTable folder as the real `mltable` reads it: columns, row count, each row's image bytes (or None)."""
    if not MLTABLE_PYTHON.exists():
        raise RuntimeError(f"{MLTABLE_PYTHON} is missing: run `make setup`")
    done = subprocess.run(
        [str(MLTABLE_PYTHON), "-c", _LOAD_WITH_MLTABLE, str(folder)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"mltable could not load {folder}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def blob_trigger_client(container: str, path: str, connection: str = "DATASTORE") -> object:
    """What the worker hands the label trigger: the host's ModelBindingData for the blob (a reference with
    the connection's name, the container and the blob name; no content), decoded by the blob extension's
    own converter as the worker does. Only the gRPC message is stood in for."""
    from azurefunctions.extensions.base import Datum
    from azurefunctions.extensions.bindings.blob import BlobClient, BlobClientConverter

    model_binding_data = SimpleNamespace(
        version="1.0",
        source="AzureStorageBlobs",
        content_type="application/json",
        content=json.dumps({"Connection": connection, "ContainerName": container, "BlobName": path}),
    )
    datum = Datum(model_binding_data, "model_binding_data")
    return BlobClientConverter.decode(datum, trigger_metadata={}, pytype=BlobClient)


@contextmanager
def search_space_dumped_as_a_file() -> Iterator[None]:
    """Within it, `_to_dict()` dumps a search space as `{type: choice, values: [...]}`, whatever ran before.

    An SDK leak, not ours: the node's `_to_rest_object()` (every submission) dumps with the marshmallow
    context `inside_pipeline=True`, which turns each distribution into its REST string (`"choice('yolov5')"`).
    The schema's `search_space` field nests one `ImageModelDistributionSettingsObjectDetectionSchema()`
    instance shared by every schema object, and marshmallow's `Nested.schema` shallow-copies it and
    `update()`s the parent context into its `context` dict, which the copy shares with that instance: the
    flag stays set for the rest of the process. Only later `_to_dict()` dumps change (the REST body already
    uses the string form, and `build_automl_node` makes fresh distributions each build), but a test that ran a
    submission before, as with pytest-xdist, would read strings. The flag is dropped for the dump here, and
    restored after, so neither order nor this helper changes what the other tests see.
    """
    from azure.ai.ml._schema.automl.image_vertical.image_object_detection import ImageObjectDetectionSchema

    shared = ImageObjectDetectionSchema._declared_fields["search_space"].inner.nested.context  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.delitem(shared, "inside_pipeline", raising=False)
        yield


def sent_pipeline(job: PipelineJob) -> RestPipelineJob:
    """The pipeline job's properties as the SDK sends them (its REST body)."""
    from azure.ai.ml._restclient.arm_ml_service.models import PipelineJob as RestPipelineJob

    properties = job._to_rest_object().properties
    assert isinstance(properties, RestPipelineJob), type(properties)
    return properties


def strict_json(text: str | bytes) -> Any:
    """The document as JSON.parse reads it: NaN and Infinity are not JSON, so they are refused here too."""

    def refuse(token: str) -> object:
        raise ValueError(f"{token} is not JSON (JSON.parse refuses it)")

    return json.loads(text, parse_constant=refuse)


def parsed_by_javascript(text: str | bytes) -> object:
    """The document through a real JSON.parse (Node's V8, which Azurite needs anyway), read back as Python."""
    import shutil

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Azurite's tests need it)")
    script = (
        "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>process.stdout.write(JSON.stringify(JSON.parse(s))))"
    )
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    parsed = subprocess.run([node, "-e", script], input=data, capture_output=True, timeout=60)
    assert parsed.returncode == 0, f"JSON.parse refused the document: {parsed.stderr.decode()[-300:]}"
    return json.loads(parsed.stdout)


def at_once(actions: Sequence[Callable[[], object]]) -> list[object]:
    """Run each action on a thread of its own, all released together; what each returned or raised, in order."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[object] = [None] * len(actions)

    def run(index: int, action: Callable[[], object]) -> None:
        barrier.wait()
        try:
            outcomes[index] = action()
        except BaseException as error:  # the caller asserts on it
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index, action)) for index, action in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes
