"""Data loader against a real Azurite: exact conversion, reruns, quarantine, refused archives, SAS download."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas
from PIL import Image

from devtools.azurite import DEV_ACCOUNT, DEV_KEY
from devtools.synthetic import LABEL_MAP, SheetSpec, write_dataset_zip
from retrainer.datastore import Datastore
from retrainer.ingestion import loader as data_loader
from tests.helpers import jpeg_bytes, read_jsonl
from tests.npy_files import legacy_npy, malicious_npy

SMALL = SheetSpec(min_side=200, max_side=400, min_symbols=2, max_symbols=5)


def run_loader(tmp_path: Path, source: str) -> tuple[int, dict]:
    summary_path = tmp_path / "summary.json"
    code = data_loader.main(
        ["--raw-blob-sas-url", source, "--raw-input-path", str(tmp_path / "raw"), "--summary-json", str(summary_path)]
    )
    return code, (json.loads(summary_path.read_text()) if summary_path.exists() else {})


@pytest.mark.usefixtures("service_env")
def test_generated_set_is_loaded_and_converted_exactly(tmp_path: Path, datastore: Datastore) -> None:
    zip_path = write_dataset_zip(tmp_path / "set.zip", count=6, seed=3, spec=SMALL)
    code, summary = run_loader(tmp_path, str(zip_path))
    assert code == 0
    assert summary["images"]["uploaded"] == 6 and summary["labels_converted"] == 6 and summary["quarantined"] == []
    assert json.loads(datastore.read("data/label_map.json")) == LABEL_MAP
    with zipfile.ZipFile(zip_path) as archive:
        for name in (n for n in archive.namelist() if n.startswith("labels/")):
            stem = name[len("labels/") : -len("_symbols.npy")]
            width, height = Image.open(io.BytesIO(archive.read(f"images/{stem}.jpg"))).size
            rows = np.load(io.BytesIO(archive.read(name)), allow_pickle=True)  # our own generated file
            (record,) = read_jsonl(datastore.read(f"data/labels/{stem}.jsonl"))
            assert record["image_url"] == f"{stem}.jpg"
            assert record["image_details"] == {"format": "jpg", "width": width, "height": height}
            expected = [[r[2], r[1][0] / width, r[1][1] / height, r[1][2] / width, r[1][3] / height] for r in rows]
            got = [[b["label"], b["topX"], b["topY"], b["bottomX"], b["bottomY"]] for b in record["label"]]
            assert got == expected
    assert zip_path.exists(), "the user's zip is never deleted"


@pytest.mark.usefixtures("service_env")
def test_rerun_skips_everything_already_stored(tmp_path: Path, datastore: Datastore) -> None:
    zip_path = write_dataset_zip(tmp_path / "set.zip", count=4, seed=5, spec=SMALL)
    assert run_loader(tmp_path, zip_path.as_uri())[0] == 0
    etags = {blob.name: datastore.etag(blob.name) for blob in datastore.list("data/")}
    code, summary = run_loader(tmp_path, zip_path.as_uri())
    assert code == 0
    assert summary["images"] == {"uploaded": 0, "unchanged": 4}
    assert summary["labels"] == {"uploaded": 0, "unchanged": 4}
    assert summary["labels_already_converted"] == 4
    assert {name: datastore.etag(name) for name in etags} == etags


def bad_set(tmp_path: Path, marker: Path) -> Path:
    image = jpeg_bytes(120, 80)
    good = legacy_npy([["Gate valve", [10, 10, 40, 30], "1"]])
    entries = {
        "label_map.json": json.dumps(LABEL_MAP).encode(),
        "images/good.jpg": image,
        "labels/good_symbols.npy": good,
        "images/pickle.jpg": image,
        "labels/pickle_symbols.npy": malicious_npy(marker),
        "images/truncated.jpg": image,
        "labels/truncated_symbols.npy": good[:-6],
        "images/nan.jpg": image,
        "labels/nan_symbols.npy": legacy_npy([["Gate valve", [10, 10, float("nan"), 30], "1"]]),
        "images/inverted.jpg": image,
        "labels/inverted_symbols.npy": legacy_npy([["Gate valve", [40, 10, 10, 30], "1"]]),
        "images/outside.jpg": image,
        "labels/outside_symbols.npy": legacy_npy([["Gate valve", [100, 10, 140, 30], "1"]]),
        "images/unknown.jpg": image,
        "labels/unknown_symbols.npy": legacy_npy([["Gate valve", [10, 10, 40, 30], "99"]]),
        "images/fake.jpg": b"MZ\x90\x00 an executable pretending to be a jpeg",
        "labels/fake_symbols.npy": good,
        "images/empty.jpg": image,
        "labels/empty_symbols.npy": legacy_npy([]),
    }
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.mark.usefixtures("service_env")
def test_every_bad_file_ends_in_quarantine_with_its_reason(tmp_path: Path, datastore: Datastore) -> None:
    marker = tmp_path / "pwned"
    code, summary = run_loader(tmp_path, str(bad_set(tmp_path, marker)))
    assert code == 1
    assert not marker.exists(), "the pickle payload must never run"
    reasons = {item["path"]: item["reason"] for item in summary["quarantined"]}
    expected = {
        "data/labels/pickle_symbols.npy": "not allowed",
        "data/labels/truncated_symbols.npy": "file:",
        "data/labels/nan_symbols.npy": "finite",
        "data/labels/inverted_symbols.npy": "x1 < x2",
        "data/labels/outside_symbols.npy": "outside the 120x80 image",
        "data/labels/unknown_symbols.npy": "not in the label map",
        "data/images/fake.jpg": "not a readable image",
    }
    assert set(reasons) == set(expected)
    for path, fragment in expected.items():
        assert fragment in reasons[path]
        stored_reason = json.loads(datastore.read(f"quarantine/{path}.reason.json"))
        assert fragment in stored_reason["reason"] and stored_reason["handler"] == "data-loader"
        assert datastore.exists(f"quarantine/{path}") and not datastore.exists(path)
    assert summary["waiting_for_image"] == ["data/labels/fake_symbols.npy"]
    assert summary["labels_converted"] == 2
    assert read_jsonl(datastore.read("data/labels/empty.jsonl"))[0]["label"] == []

    code, again = run_loader(tmp_path, str(bad_set(tmp_path, marker)))
    assert code == 1 and len(again["quarantined"]) == len(expected)
    assert not marker.exists()


@pytest.mark.usefixtures("service_env")
@pytest.mark.parametrize(
    "entries",
    [
        {"images/a.jpg": b"x", "../../outside.jpg": b"x"},
        {"images/a.jpg": b"\0" * (4 * 1024 * 1024)},
        {"./images/a.jpg": b"x"},
        {"images/./a.jpg": b"x"},
        {"images//a.jpg": b"x"},
        {"images/a\x1b[2J.jpg": b"x"},
        {"images/" + "a" * 1000 + ".jpg": b"x"},
    ],
    ids=["zip-slip", "zip-bomb", "dot-segment", "inner-dot", "empty-segment", "control-character", "long-name"],
)
def test_unsafe_archives_are_refused_without_touching_anything(
    tmp_path: Path, datastore: Datastore, entries: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "unsafe.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    code, _ = run_loader(tmp_path, str(path))
    assert code == 2
    assert "data loader refused" in capsys.readouterr().err
    assert list(datastore.list("")) == []
    assert not (tmp_path / "outside.jpg").exists() and not (tmp_path.parent / "outside.jpg").exists()


@pytest.mark.usefixtures("service_env")
def test_sas_url_download_never_shows_the_signature(
    tmp_path: Path,
    datastore: Datastore,
    connection_string: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    zip_path = write_dataset_zip(tmp_path / "shared.zip", count=2, seed=9, spec=SMALL)
    service = BlobServiceClient.from_connection_string(connection_string)
    source = service.get_blob_client("shared-sets", "sets/shared.zip")
    service.create_container("shared-sets")
    source.upload_blob(zip_path.read_bytes())
    sas = generate_blob_sas(
        DEV_ACCOUNT,
        "shared-sets",
        "sets/shared.zip",
        account_key=DEV_KEY,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    signature = dict(part.split("=", 1) for part in sas.split("&"))["sig"]
    code, summary = run_loader(tmp_path, f"{source.url}?{sas}")
    assert code == 0 and summary["labels_converted"] == 2
    assert (tmp_path / "raw" / "shared.zip").read_bytes() == zip_path.read_bytes()
    output = capfd.readouterr()
    for text in (output.out, output.err, caplog.text):
        assert signature not in text and DEV_KEY not in text

    code, _ = run_loader(tmp_path, f"{source.url.replace('shared.zip', 'missing.zip')}?{sas}")
    output = capfd.readouterr()
    assert code == 2 and "download of" in output.err and signature not in output.err + output.out


def test_plain_http_is_refused_for_remote_hosts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be https"):
        data_loader.fetch_archive("http://example.com/set.zip?sig=x", tmp_path)


def corrupt_member(path: Path, name: str) -> None:
    """Flip bytes inside one member's compressed data; the zip's directory stays valid."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    raw = bytearray(path.read_bytes())
    header_end = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for offset in range(header_end + 2, header_end + 12):
        raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.usefixtures("service_env")
def test_a_member_corrupt_in_the_zip_is_reported_and_never_uploaded(tmp_path: Path, datastore: Datastore) -> None:
    zip_path = write_dataset_zip(tmp_path / "set.zip", count=4, seed=9, spec=SMALL)
    with zipfile.ZipFile(zip_path) as archive:
        label = next(n for n in archive.namelist() if n.endswith("_symbols.npy"))
        image = next(n for n in archive.namelist() if n.endswith(".jpg"))
    corrupt_member(zip_path, label)
    corrupt_member(zip_path, image)
    code, summary = run_loader(tmp_path, str(zip_path))
    assert code == 1, "finished, but something needs attention"
    assert sorted(item["path"] for item in summary["corrupt_in_zip"]) == sorted([label, image])
    stored = {blob.name for blob in datastore.list("data/")}
    assert f"data/labels/{Path(label).name}" not in stored and f"data/images/{Path(image).name}" not in stored
    assert len([name for name in stored if name.endswith(".jsonl")]) == 3


def test_the_read_budget_bounds_the_bytes_held_at_once() -> None:
    import threading
    import time

    budget = data_loader._ByteBudget(64)
    holding, peak = [0], [0]
    lock = threading.Lock()

    def work() -> None:
        with budget.hold(32):
            with lock:
                holding[0] += 32
                peak[0] = max(peak[0], holding[0])
            time.sleep(0.01)
            with lock:
                holding[0] -= 32

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 64
    with budget.hold(1000):  # a member larger than the whole budget still runs, alone
        pass
