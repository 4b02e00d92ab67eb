"""Benchmark: the local endpoint following the champion (`retrain serve`), measured as a client sees it.

Two stub MLflow models (versions 1 and 2, answering at once, so the figures are the endpoint's own) in a fresh
local registry, Azurite for the champion's record and the serving status. `retrain serve` runs in a process of its
own, as a user starts it, while a client sends requests in a loop. Figures:

- seconds from a promotion to the endpoint serving the new version (a new deployment: start the inference server,
  load the model, smoke-test, move traffic), and from a rollback to serving the old one again (the kept
  deployment: a traffic switch); the ratio of the two;
- requests answered and failed during both changes;
- median latency of a request through the router, and straight to the deployment's own server (the baseline):
  the router's cost as a ratio.

    python bench/serving.py [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from devtools.azurite import running_azurite
from devtools.local_endpoint import start_serving, wait_until_serving
from devtools.machine import cpu_model
from devtools.step_rehearsal import save_one_symbol_model
from retrainer.serving.contract import scoring_request
from retrainer.serving.local import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def post(url: str, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status, time.perf_counter() - started
    except urllib.error.HTTPError as error:
        return error.code, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests for each latency figure")
    args = parser.parse_args(argv)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AZURE_SUBSCRIPTION_ID"):
        os.environ.pop(variable, None)
    with tempfile.TemporaryDirectory() as scratch, running_azurite(PROJECT_ROOT) as azurite:
        root = Path(scratch)
        os.environ.update(
            {
                "STORAGE_ACCOUNT_CONNECTION_STRING": azurite.connection_string,
                "STORAGE_ACCOUNT_CONTAINER_NAME": "bench",
                "LEDGER_TABLE_PREFIX": "bench",
                "WORKSPACE_BACKEND": "local",
                "LOCAL_WORKSPACE_DIR": str(root / "workspace"),
                "LOCAL_SERVING_ENVIRONMENT": str(PROJECT_ROOT / ".venv-serving"),
            }
        )
        from retrainer import bootstrap

        bootstrap.reset()
        bootstrap.datastore().ensure_container()
        authority = bootstrap.champion()
        registry = bootstrap.open_registry(bootstrap.get_settings())
        for label in ("v1", "v2"):
            model = save_one_symbol_model(root / label, label)
            registry.register_model("pid-symbol-detector", model, description="", tags={})
        authority.promote("1", "benchmark", "bench")
        port = free_port()
        url = f"http://127.0.0.1:{port}/score"
        serve_log = root / "serve.log"
        serve = start_serving(port, serve_log, interval=0.5)

        def serving(version: str) -> float:
            blob = bootstrap.get_settings().SERVING_STATUS_BLOB
            return wait_until_serving(serve, bootstrap.datastore(), blob, version, seconds=300, log=serve_log, poll=0.1)

        try:
            first = serving("1")
            body = json.dumps(scoring_request([b"\x89PNG"])).encode()
            outcomes: list[int] = []
            stop = threading.Event()

            def client() -> None:
                while not stop.is_set():
                    outcomes.append(post(url, body)[0])

            thread = threading.Thread(target=client)
            thread.start()
            started = time.monotonic()
            authority.promote("2", "benchmark: a new version", "bench")
            serving("2")
            to_new = time.monotonic() - started  # from the promotion, as a client sees it
            started = time.monotonic()
            authority.promote("1", "benchmark: a rollback", "bench")
            serving("1")
            to_old = time.monotonic() - started
            stop.set()
            thread.join()
            routed = statistics.median(post(url, body)[1] for _ in range(args.requests))
            direct_port = free_port()
            baseline = direct_server(root / "v1", direct_port)
            try:
                direct_url = f"http://127.0.0.1:{direct_port}/score"
                direct = statistics.median(post(direct_url, body)[1] for _ in range(args.requests))
            finally:
                baseline.terminate()
                baseline.wait(timeout=30)
        finally:
            serve.terminate()
            serve.wait(timeout=60)
    failed = sum(1 for code in outcomes if code != 200)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"first version served {first:.1f} s after `retrain serve` started")
    print(f"promotion -> new version serving: {to_new:.1f} s (new deployment, smoke test, traffic)")
    print(f"rollback -> old version serving:  {to_old:.1f} s (the kept deployment: a traffic switch)")
    print(f"ratio new deployment / traffic switch: {to_new / max(to_old, 1e-9):.1f}x")
    print(f"requests during both changes: {len(outcomes)}, failed: {failed}")
    print(
        f"median latency through the router {routed * 1000:.1f} ms, straight to the server {direct * 1000:.1f} ms "
        f"(ratio {routed / direct:.2f}x, {args.requests} requests each)"
    )
    return 1 if failed else 0


def direct_server(model: Path, port: int) -> subprocess.Popen[bytes]:
    """The baseline: the same inference server and entry script a deployment runs, on the same model, no router."""
    server = PROJECT_ROOT / ".venv-serving" / "bin" / "azmlinfsrv"
    script = PROJECT_ROOT / "inference" / "score.py"
    command = [str(server), "--entry_script", str(script), "--model_dir", str(model), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the baseline server did not start")


if __name__ == "__main__":
    raise SystemExit(main())
