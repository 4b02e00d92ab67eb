"""Fault injection (slow): Azurite is killed mid-work and restarted on the same data folder.

Storage that disappears must end in a clear, bounded failure, and the same work must resume
without loss or duplication once storage is back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.azurite import AzuriteEndpoints, running_azurite
from devtools.synthetic import SheetSpec, write_dataset_zip
from retrainer.champion.authority import ChampionAuthority
from retrainer.datastore import Datastore
from retrainer.events import build_subject
from retrainer.ledger import Ledger
from retrainer.retraining import RetrainingService
from retrainer.settings import load_settings
from shared.records import RunState
from tests.fakes import FakeRunner, first_promotion, registry_after
from tests.helpers import deliver, stored_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: Azurite keeps table and blob metadata in memory and saves them every few seconds; Azure Storage
#: would not lose an acknowledged write, so the test waits for a save before it kills the emulator.
AZURITE_SAVE_INTERVAL_S = 6
SMALL = SheetSpec(min_side=200, max_side=400, min_symbols=2, max_symbols=5)


def kill_azurite(azurite: AzuriteEndpoints) -> None:
    found = subprocess.run(["pgrep", "-f", f"blobPort {azurite.blob_port}"], capture_output=True, text=True)
    pids = found.stdout.split()
    assert pids, "Azurite's process was not found"
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)


def test_storage_lost_mid_load_exits_3_and_the_same_command_resumes(tmp_path: Path) -> None:
    """Azurite is killed while the loader uploads, then restarted on the same data folder."""
    root = ROOT
    zip_path = write_dataset_zip(tmp_path / "set.zip", count=300, seed=12, spec=SMALL)
    data_folder = tmp_path / "azurite-data"
    command = [sys.executable, "-m", "retrainer.ingestion.loader", "--raw-blob-sas-url", str(zip_path)]
    env = {**os.environ, "STORAGE_ACCOUNT_CONTAINER_NAME": "data", "LEDGER_TABLE_PREFIX": "faults"}
    with running_azurite(root, data_folder=data_folder) as azurite:
        env["STORAGE_ACCOUNT_CONNECTION_STRING"] = azurite.connection_string
        loader = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        store = Datastore.from_connection_string(azurite.connection_string, "data")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(store.list("data/images/"))) < 30:
            time.sleep(0.05)
        kill_azurite(azurite)
        out, err = loader.communicate(timeout=300)
    assert loader.returncode == 3, out + err
    assert "run the same command again to resume" in err and "Traceback" not in err
    with running_azurite(root, data_folder=data_folder) as azurite:
        env["STORAGE_ACCOUNT_CONNECTION_STRING"] = azurite.connection_string
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already stored" in again.stdout
        store = Datastore.from_connection_string(azurite.connection_string, "data")
        assert len([b for b in store.list("data/labels/") if b.name.endswith(".jsonl")]) == 300


def service_on(
    azurite: AzuriteEndpoints, runner: FakeRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[RetrainingService, Ledger]:
    monkeypatch.setenv("STORAGE_ACCOUNT_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", "data")
    monkeypatch.setenv("RETRAIN_MIN_NEW_IMAGES", "2")
    monkeypatch.setenv("RETRAIN_QUIET_MINUTES", "0")
    settings = load_settings()
    ledger = Ledger.from_settings(settings)
    ledger.ensure_tables()
    store = Datastore.from_settings(settings)
    store.ensure_container()
    champion = ChampionAuthority(settings, registry_after(first_promotion(), tmp_path), ledger, store)
    return RetrainingService(settings, ledger, runner=lambda: runner, champion=lambda: champion), ledger


def test_the_service_fails_fast_without_storage_and_finishes_the_run_when_it_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.core.exceptions import AzureError

    runner = FakeRunner()
    data_folder = tmp_path / "azurite-data"
    with running_azurite(ROOT, data_folder=data_folder) as azurite:
        service, ledger = service_on(azurite, runner, monkeypatch, tmp_path)
        for name in ("a.jpg", "b.jpg"):
            deliver(service, build_subject("data", f"data/images/{name}"), {"api": "PutBlob", "eTag": "0x1"})
        run_id = service.tick().submitted
        assert run_id == "run-1"
        time.sleep(AZURITE_SAVE_INTERVAL_S)  # Azurite persists its tables periodically, not per write
        kill_azurite(azurite)
        runner.finish(
            run_id,
            RunState.COMPLETED,
            first_promotion(),
        )
        started = time.monotonic()
        outcome = service.tick()  # every part is tried, each fails on its own, and the tick says so
        assert time.monotonic() - started < 60, "bounded retries, not minutes of silence"
        assert outcome.failures and all(isinstance(failure.error, AzureError) for failure in outcome.failures)
        assert outcome.followed == {} and outcome.submitted is None
    with running_azurite(ROOT, data_folder=data_folder) as azurite:
        service, ledger = service_on(azurite, runner, monkeypatch, tmp_path)
        outcome = service.tick()
        assert outcome.followed == {run_id: "completed"} and outcome.submitted is None
        assert service.champion.record() is not None and stored_run(ledger, run_id).promotion_done
        assert len(runner.submitted) == 1


def test_a_wrong_key_says_the_credentials_were_refused_not_to_run_again(tmp_path: Path, connection_string: str) -> None:
    """Azurite refuses a request signed with another key; running the same command again cannot help."""
    import base64
    import re

    wrong = re.sub(r"AccountKey=[^;]+", "AccountKey=" + base64.b64encode(b"x" * 64).decode(), connection_string)
    zip_path = write_dataset_zip(tmp_path / "set.zip", count=2, seed=3, spec=SMALL)
    env = {**os.environ, "STORAGE_ACCOUNT_CONNECTION_STRING": wrong, "STORAGE_ACCOUNT_CONTAINER_NAME": "data"}
    command = [sys.executable, "-m", "retrainer.ingestion.loader", "--raw-blob-sas-url", str(zip_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "storage refused the credentials" in result.stderr and "run the same command again" not in result.stderr
    assert base64.b64encode(b"x" * 64).decode() not in result.stderr, "the key never reaches the message"
