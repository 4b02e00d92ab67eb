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
    scheme: str = "http"

    def service_uri(self, service: str) -> str:
        """`https://127.0.0.1:<port>/devstoreaccount1` for blob, queue or table."""
        port = {"blob": self.blob_port, "queue": self.queue_port, "table": self.table_port}[service]
        return f"{self.scheme}://127.0.0.1:{port}/{DEV_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={self.service_uri('blob')};"
            f"QueueEndpoint={self.service_uri('queue')};"
            f"TableEndpoint={self.service_uri('table')};"
        )


def write_self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (Azurite's OAuth needs HTTPS); returns (cert, key) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "azurite-cert.pem", folder / "azurite-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


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
def running_azurite(
    project_root: Path, data_folder: Path | None = None, tls: tuple[Path, Path] | None = None, oauth: bool = False
) -> Iterator[AzuriteEndpoints]:
    """Azurite on free loopback ports; in memory unless `data_folder` is given (the demo keeps its data).

    `tls` (certificate, key) serves HTTPS; `oauth` (which needs it) also accepts bearer tokens, checking
    their audience, issuer and expiry as Azure Storage does (not their signature).
    """
    if oauth and tls is None:
        raise ValueError("Azurite accepts OAuth only over HTTPS: pass tls=(certificate, key)")
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
        *(["--cert", str(tls[0]), "--key", str(tls[1])] if tls else []),
        *(["--oauth", "basic"] if oauth else []),
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=work, stdout=log_file, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        _wait_until_listening([blob_port, queue_port, table_port], process, log_path)
        yield AzuriteEndpoints(blob_port, queue_port, table_port, "https" if tls else "http")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)
