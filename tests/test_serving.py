"""Serving the champion: the scoring contract, and the local endpoint answering real requests across changes.

The local endpoint is the real thing: `retrain serve` in a process of its own, Azure ML's inference server
(azureml-inference-server-http) per deployment in the serving environment, real HTTP. The models are small MLflow
models whose answers name their version, so a client sees which version answered each request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.local_endpoint import start_serving, wait_until_serving
from devtools.step_rehearsal import save_one_symbol_model
from retrainer.champion.authority import ChampionAuthority
from retrainer.datastore import Datastore
from retrainer.ledger import Ledger
from retrainer.serving.contract import InvalidAnswer, detections, scoring_request
from retrainer.serving.local import free_port
from retrainer.serving.status import read_serving_status
from retrainer.settings import load_settings
from shared.registry.local import LocalModelRegistry
from tests.helpers import png_bytes

ROOT = Path(__file__).resolve().parents[1]
SERVING_ENVIRONMENT = ROOT / ".venv-serving"
NAME = "pid-symbol-detector"


# --- the contract ------------------------------------------------------------------------------------------------


def test_a_request_carries_each_image_as_one_base64_row_and_an_answer_is_checked_box_by_box() -> None:
    request = scoring_request([b"\xff\xd8jpeg", b"png"])
    assert request == {"input_data": {"columns": ["image"], "data": [["/9hqcGVn"], ["cG5n"]]}}
    box: dict[str, Any] = {"box": {"topX": 0.1, "topY": 0.2, "bottomX": 0.3, "bottomY": 0.4}, "label": 3, "score": 0.9}
    ((found,), ()) = detections([{"boxes": [box]}, {"boxes": []}], 2)
    assert (found.top_x, found.bottom_y, found.label, found.score) == (0.1, 0.4, "3", 0.9)
    broken = [
        ({"boxes": [box]}, "expected a list of 1 image results"),
        ([{"boxes": [box]}], "expected a list of 2"),
        ([{"boxes": [{**box, "score": 1.5}]}, {"boxes": []}], "outside [0, 1]"),
        ([{"boxes": [{**box, "box": {**box["box"], "topX": 0.5}}]}, {"boxes": []}], "the wrong way round"),
        ([{"boxes": [{"box": {}}]}, {"boxes": []}], "without box/label/score"),
        ([{"detections": []}, {"boxes": []}], "with a list 'boxes'"),
    ]
    for answer, words in broken:
        with pytest.raises(InvalidAnswer, match=words.replace("[", r"\[").replace("]", r"\]")):
            detections(answer, 1 if words.startswith("expected a list of 1") else 2)


def test_the_serving_environment_provides_every_package_the_local_detector_declares() -> None:
    """The detector's MLflow model lists its requirements; the local endpoint's environment must install them."""
    import re

    from pipeline_steps.detector.pyfunc import model_requirements

    def name(requirement: str) -> str:
        return re.split(r"[<>=~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()

    lines = (ROOT / "inference/requirements.txt").read_text().splitlines()
    provided = {name(line) for line in lines if line.strip() and not line.startswith("#")}
    declared = {name(requirement) for requirement in model_requirements()}
    assert "azureml-inference-server-http" in provided
    assert {"mlflow-skinny" if n == "mlflow" else n for n in declared} <= provided
    pins = {name(line): line.split("==")[1] for line in lines if "==" in line}
    assert f"torch=={pins['torch']}" in model_requirements(), "the same torch as the model was trained with"


# --- the local endpoint, for real ---------------------------------------------------------------------------------


# --- the local endpoint's router --------------------------------------------------------------------------------

#: A stand-in inference server: `--model_dir .../live` answers liveness and every request; `.../silent` takes a
#: connection, says so in its log, and never answers (a server still loading its model).
STAND_IN_SERVER = """
import socket, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
port = int(args["--port"])
if args["--model_dir"].endswith("silent"):
    listening = socket.create_server(("127.0.0.1", port))
    print("listening", flush=True)
    connection, _ = listening.accept()
    print("probed", flush=True)
    time.sleep(600)


class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        self._answer(b"Healthy")

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(b'[{"boxes": []}]')

    def _answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", port), Answer).serve_forever()
"""


@pytest.mark.slow  # waits out a probe's 2 s timeout
def test_a_deployment_that_never_answers_its_probe_does_not_hold_up_requests_to_the_live_one(tmp_path: Path) -> None:
    from retrainer.serving.endpoint import DeploymentState
    from retrainer.serving.local import LocalEndpoint
    from shared.records import ModelVersion

    server = tmp_path / "environment" / "bin" / "azmlinfsrv"
    server.parent.mkdir(parents=True)
    server.write_text(f"#!{sys.executable}\n" + STAND_IN_SERVER)
    server.chmod(0o755)
    fetch = lambda version: tmp_path / version.version  # noqa: E731
    endpoint = LocalEndpoint(NAME, free_port(), tmp_path / "environment", tmp_path / "logs", fetch)
    endpoint.start()
    try:
        endpoint.create_deployment("live", ModelVersion(NAME, "live", {}, "live"))
        for _ in range(200):
            if all(d.state == DeploymentState.READY for d in endpoint.view().deployments):
                break
            time.sleep(0.05)
        endpoint.set_traffic({"live": 100})
        endpoint.create_deployment("silent", ModelVersion(NAME, "silent", {}, "silent"))
        silent_log = tmp_path / "logs" / "silent.log"

        def wait_for(word: str) -> None:
            for _ in range(500):
                if word in silent_log.read_text():
                    return
                time.sleep(0.01)
            raise AssertionError(f"the silent deployment never said {word!r}")

        wait_for("listening")
        viewing = threading.Thread(target=endpoint.view)
        viewing.start()
        wait_for("probed")  # the view waits on its liveness probe now
        assert endpoint.score(scoring_request([b"png"])) == [{"boxes": []}], "the live deployment answers"
        assert viewing.is_alive(), "answered while the view still waits on the silent deployment's probe"
        viewing.join()
    finally:
        endpoint.close()


@pytest.fixture
def serving_world(service_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A local registry with versions 1 and 2 (stub models answering "v1" and "v2"), version 1 the champion, and
    `retrain serve` serving it."""
    if not (SERVING_ENVIRONMENT / "bin" / "azmlinfsrv").is_file():
        pytest.fail("the serving environment is missing: `make setup-serving` (make test sets it up)")
    workspace = tmp_path / "workspace"
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(workspace))
    monkeypatch.setenv("LOCAL_SERVING_ENVIRONMENT", str(SERVING_ENVIRONMENT))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(variable, raising=False)
    settings = load_settings()
    registry = LocalModelRegistry(workspace)
    for label in ("v1", "v2"):
        registry.register_model(NAME, save_one_symbol_model(tmp_path / label, label), description="", tags={})
    datastore = Datastore.from_settings(settings)
    datastore.ensure_container()
    ledger = Ledger.from_settings(settings)
    ledger.ensure_tables()
    authority = ChampionAuthority(settings, registry, ledger, datastore)
    authority.promote("1", "the first model", "test")
    port = free_port()
    log = tmp_path / "serve.log"
    serve = start_serving(port, log, interval=0.5)
    world = {
        "authority": authority,
        "datastore": datastore,
        "settings": settings,
        "url": f"http://127.0.0.1:{port}",
        "serve": serve,
        "log": log,
    }
    try:
        wait_until(world, "1", seconds=120)
        yield world
    finally:
        serve.terminate()
        serve.wait(timeout=60)
        print(log.read_text())  # shown when a test fails


def wait_until(world: dict, version: str, seconds: float) -> float:
    """Seconds until the endpoint serves `version`."""
    blob = world["settings"].SERVING_STATUS_BLOB
    return wait_until_serving(world["serve"], world["datastore"], blob, version, seconds=seconds, log=world["log"])


def ask(url: str) -> tuple[int, str | None]:
    """One request through the endpoint: its status, and the class the answering model named."""
    body = json.dumps(scoring_request([png_bytes(8, 8)])).encode()
    request = urllib.request.Request(f"{url}/score", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            ((found,),) = detections(json.loads(response.read()), 1)
            return response.status, found.label
    except urllib.error.HTTPError as error:
        return error.code, None


@pytest.mark.slow
def test_retrain_serve_follows_a_promotion_and_a_rollback_within_a_minute_without_a_failed_request(
    serving_world: dict,
) -> None:
    url, authority = serving_world["url"], serving_world["authority"]
    assert urllib.request.urlopen(f"{url}/", timeout=5).status == 200, "liveness"
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            answers.append(ask(url))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        authority.promote("2", "a better model", "ana")
        to_new = wait_until(serving_world, "2", seconds=60)
        time.sleep(1.0)
        assert answers[-1] == (200, "v2")
        authority.promote("1", "2 misses valves", "ana")  # a rollback: version 1's deployment was kept
        to_old = wait_until(serving_world, "1", seconds=60)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    assert to_new < 60 and to_old < 60
    failed = [answer for answer in answers if answer[0] != 200]
    assert failed == [] and len(answers) > 20, f"{len(failed)} of {len(answers)} requests failed"
    labels = [label for _, label in answers]
    assert labels[-1] == "v1" and "v2" in labels
    status = read_serving_status(serving_world["datastore"], serving_world["settings"].SERVING_STATUS_BLOB)
    assert status is not None and "switched back to the kept deployment" in status.message, "a traffic switch"
    shown = subprocess.run(
        [sys.executable, "-m", "retrainer.cli", "endpoint", "--json"], cwd=ROOT, capture_output=True, text=True
    )
    printed = json.loads(shown.stdout)
    assert {key: printed[key] for key in ("backend", "url", "version", "state")} == {
        "backend": "local",
        "url": f"{url}/score",
        "version": "1",
        "state": "serving",
    }
    assert printed["since"]
