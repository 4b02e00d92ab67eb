"""The local endpoint: Azure ML's inference server for each deployment, behind a router that splits the traffic.

Each deployment is `azmlinfsrv` (azureml-inference-server-http, the server Azure ML runs MLflow models with) in a
process of its own, in the serving environment (LOCAL_SERVING_ENVIRONMENT: the server and the model's requirements,
which clash with the service's), on a port of its own, with `score.py` as its entry script. The router is the
endpoint: `POST /score` goes to a deployment picked by the traffic split (or named by the
`azureml-model-deployment` header, as on Azure ML), `GET /` answers liveness. A deployment is replaced only once
its successor answers, and is stopped only when no request it took is still running: a swap fails no request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from retrainer.serving.endpoint import Deployment, DeploymentState, EndpointView, ScoringFailed
from shared.records import ModelVersion

log = logging.getLogger(__name__)

#: The header that sends a request to one deployment, as Azure ML's managed online endpoints read it.
DEPLOYMENT_HEADER = "azureml-model-deployment"
#: How long a deployment may take to answer its first liveness probe before it counts as failed.
STARTUP_SECONDS = 300.0
#: How long a request may run through the router.
REQUEST_SECONDS = 300.0
_ENTRY_SCRIPT = Path(__file__).resolve().parents[2] / "inference" / "score.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class _Process:
    """One deployment: its server process, its port, and the requests it is answering now."""

    name: str
    version: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float
    ready: bool = False
    deleting: bool = False
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalEndpoint:
    """An endpoint on this machine; the process that holds it (`retrain serve`) owns its deployments."""

    backend = "local"

    def __init__(
        self,
        name: str,
        port: int,
        environment: Path,
        logs: Path,
        fetch: Callable[[ModelVersion], Path],
        host: str = "127.0.0.1",
    ) -> None:
        """`fetch` gives a version's MLflow model folder (the local registry's own; downloaded from Azure ML)."""
        self.name = name
        self._fetch = fetch
        self._port = port
        self._host = host
        self._server_command = environment / "bin" / "azmlinfsrv"
        if not self._server_command.is_file():
            raise FileNotFoundError(
                f"the serving environment has no inference server ({self._server_command}): `make setup-serving` "
                "installs it (LOCAL_SERVING_ENVIRONMENT names another)"
            )
        self._logs = logs
        self._deployments: dict[str, _Process] = {}
        self._traffic: dict[str, int] = {}
        self._lock = threading.Lock()
        self._router: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}/score"

    # --- the router ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the endpoint: the router listens from now on (503 until a deployment takes traffic)."""
        endpoint = self

        class Router(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer(200, b"Healthy", "text/plain")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, answer, kind = endpoint._forward(self.path, body, self.headers.get(DEPLOYMENT_HEADER))
                self._answer(status, answer, kind)

            def _answer(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("router: " + format, *args)

        self._router = ThreadingHTTPServer((self._host, self._port), Router)
        self._router.daemon_threads = True
        threading.Thread(target=self._router.serve_forever, name="serving-router", daemon=True).start()

    def _forward(self, path: str, body: bytes, named: str | None) -> tuple[int, bytes, str]:
        if path.rstrip("/") != "/score":
            return 404, b'{"error": "POST /score"}', "application/json"
        deployment = self._pick(named)
        if deployment is None:
            message = f"no deployment named {named!r} is ready" if named else "no deployment takes traffic yet"
            return 503, json.dumps({"error": message}).encode(), "application/json"
        try:
            connection = http.client.HTTPConnection("127.0.0.1", deployment.port, timeout=REQUEST_SECONDS)
            connection.request("POST", "/score", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read(), response.getheader("Content-Type") or "application/json"
        except OSError as error:
            return 502, json.dumps({"error": f"{deployment.name} did not answer: {error}"}).encode(), "application/json"
        finally:
            with deployment.lock:
                deployment.in_flight -= 1

    def _pick(self, named: str | None) -> _Process | None:
        """The deployment that takes this request, counted in flight under the lock that deletion checks."""
        with self._lock:
            if named is not None:
                chosen = self._deployments.get(named)
                chosen = chosen if chosen is not None and chosen.ready and not chosen.deleting else None
            else:
                weights = {n: share for n, share in self._traffic.items() if share > 0 and n in self._deployments}
                chosen = None
                if weights:
                    pick = random.choices(list(weights), weights=list(weights.values()))[0]
                    chosen = self._deployments[pick]
            if chosen is not None:
                with chosen.lock:
                    chosen.in_flight += 1
            return chosen

    # --- the Endpoint interface -------------------------------------------------------------------------

    def view(self) -> EndpointView:
        # Probed outside the lock: a starting server may take the probe's whole timeout, and every request
        # routed meanwhile needs the lock to pick its deployment.
        with self._lock:
            processes = list(self._deployments.values())
            traffic = dict(self._traffic)
        deployments = tuple(self._state(d) for d in processes)
        return EndpointView(self.url if self._router else None, self._router is not None, deployments, traffic)

    def _state(self, deployment: _Process) -> Deployment:
        if deployment.deleting:
            return Deployment(deployment.name, deployment.version, DeploymentState.DELETING)
        if deployment.process.poll() is not None:
            return Deployment(deployment.name, deployment.version, DeploymentState.FAILED, self._tail(deployment))
        if not deployment.ready:
            deployment.ready = self._answers(deployment.port)
        if deployment.ready:
            return Deployment(deployment.name, deployment.version, DeploymentState.READY)
        if time.monotonic() - deployment.started > STARTUP_SECONDS:
            return Deployment(
                deployment.name, deployment.version, DeploymentState.FAILED, f"no answer in {STARTUP_SECONDS:g} s"
            )
        return Deployment(deployment.name, deployment.version, DeploymentState.CREATING, "starting the server")

    def create_deployment(self, name: str, version: ModelVersion) -> None:
        port = free_port()
        self._logs.mkdir(parents=True, exist_ok=True)
        log_path = self._logs / f"{name}.log"
        command = [
            str(self._server_command),
            "--entry_script",
            str(_ENTRY_SCRIPT),
            "--model_dir",
            str(self._fetch(version)),
            "--port",
            str(port),
        ]
        # The server's own environment: none of the service's settings or secrets reach the deployment.
        env = {
            "PATH": os.environ.get("PATH", ""),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "HOME": os.environ.get("HOME", "/"),
        }
        with open(log_path, "wb") as output:
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=self._logs, preexec_fn=_end_with_parent
            )
        with self._lock:
            self._deployments[name] = _Process(name, version.version, port, process, log_path, time.monotonic())
        log.info("local endpoint: deploying version %s as %s on port %d", version.version, name, port)

    def delete_deployment(self, name: str) -> None:
        with self._lock:
            deployment = self._deployments.get(name)
            if deployment is None or deployment.deleting:
                return
            deployment.deleting = True
            self._traffic.pop(name, None)
        threading.Thread(target=self._stop, args=(deployment,), daemon=True).start()

    def _stop(self, deployment: _Process) -> None:
        """Wait until the requests it took are answered (a minute at most), then stop its server."""
        deadline = time.monotonic() + 60
        while deployment.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        _terminate(deployment.process)
        with self._lock:
            self._deployments.pop(deployment.name, None)

    def set_traffic(self, traffic: dict[str, int]) -> None:
        if sum(traffic.values()) != 100 or any(share < 0 for share in traffic.values()):
            raise ValueError(f"traffic shares must be non-negative and add up to 100, got {traffic}")
        with self._lock:
            unknown = set(traffic) - set(self._deployments)
            if unknown:
                raise ValueError(f"no deployment named {sorted(unknown)}")
            self._traffic = dict(traffic)

    def score(self, request: dict[str, Any], deployment: str | None = None) -> Any:
        status, body, _ = self._forward("/score", json.dumps(request).encode(), deployment)
        if status != 200:
            raise ScoringFailed(f"{deployment or self.name} answered {status}: {body[:300].decode(errors='replace')}")
        return json.loads(body)

    def close(self) -> None:
        """Stop the router and every deployment."""
        if self._router is not None:
            self._router.shutdown()
            self._router.server_close()
        with self._lock:
            deployments = list(self._deployments.values())
        for deployment in deployments:
            _terminate(deployment.process)

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/")
            return connection.getresponse().status == 200
        except OSError:
            return False

    @staticmethod
    def _tail(deployment: _Process) -> str:
        lines = deployment.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return f"the server exited ({deployment.process.returncode}): " + " | ".join(lines)[-500:]


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _end_with_parent() -> None:
    """A deployment's server ends with the process that holds the endpoint, however that one ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
