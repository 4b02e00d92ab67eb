"""Start and stop a local Azurite (Azure Storage emulator) from `node_modules`, for tests and local mode."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: The well-known development account of every Azure Storage emulator (public, not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class AzuriteEndpoints:
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{DEV_ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{DEV_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{DEV_ACCOUNT};"
        )


def azurite_executable(project_root: Path) -> Path:
    executable = project_root / "node_modules" / ".bin" / "azurite"
    if not executable.exists():
        raise FileNotFoundError(f"{executable} is missing: run `make setup` (npm ci installs Azurite)")
    return executable


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_until_listening(ports: list[int], process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    pending = list(ports)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {process.returncode}: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"Azurite did not listen on {pending} within {_READY_TIMEOUT_S:.0f} s")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", pending[0]), timeout=0.2):
            pending.pop(0)
            continue
        time.sleep(0.05)


@contextlib.contextmanager
def running_azurite(project_root: Path, data_folder: Path | None = None) -> Iterator[AzuriteEndpoints]:
    """Azurite on free loopback ports; in memory unless `data_folder` is given (the demo keeps its data)."""
    executable = azurite_executable(project_root)
    blob_port, queue_port, table_port = _free_ports(3)
    work = Path(tempfile.mkdtemp(prefix="azurite-"))
    log_path = work / "azurite.log"
    persistence = ["--location", str(data_folder)] if data_folder else ["--inMemoryPersistence"]
    command = [
        str(executable),
        "--silent",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(blob_port),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(queue_port),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(table_port),
        *persistence,
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=work, stdout=log_file, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        _wait_until_listening([blob_port, queue_port, table_port], process, log_path)
        yield AzuriteEndpoints(blob_port, queue_port, table_port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)
