"""`retrain serve` in a process of its own, as a user starts it, and the wait until it serves a version (the
rollout's own status says so): what the demo, the endpoint's test and its benchmark share."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from retrainer.datastore import BlobStore
from retrainer.serving.status import read_serving_status

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def start_serving(port: int, log: Path, *, interval: float | None = None) -> subprocess.Popen[bytes]:
    """`retrain serve --port PORT`, its output in `log`; it follows the champion from now on."""
    command = [sys.executable, "-m", "retrainer.cli", "serve", "--port", str(port)]
    if interval is not None:
        command += ["--interval", f"{interval:g}"]
    with open(log, "wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)


def wait_until_serving(
    serve: subprocess.Popen[bytes],
    datastore: BlobStore,
    status_blob: str,
    version: str,
    *,
    seconds: float,
    log: Path,
    poll: float = 0.2,
) -> float:
    """Seconds until the endpoint serves `version`; an error naming the log if `retrain serve` ends or time runs
    out first."""
    started = time.monotonic()
    status = None
    while time.monotonic() - started < seconds:
        status = read_serving_status(datastore, status_blob)
        if status is not None and status.version == version and status.state == "serving":
            return time.monotonic() - started
        if serve.poll() is not None:
            raise RuntimeError(f"retrain serve ended ({serve.returncode}); see {log}")
        time.sleep(poll)
    raise TimeoutError(f"the endpoint did not serve version {version} within {seconds:g} s ({status}); see {log}")
