"""Label ingestion against a real Azurite: conversion, waiting, quarantine, redelivery."""

from __future__ import annotations

import json

import pytest

from retrainer.datastore import Datastore, QuarantineReason
from retrainer.ingestion.ingest import LabelIngestor, Layout, Outcome
from retrainer.ledger import Ledger
from tests.helpers import jpeg_bytes, png_bytes, read_jsonl
from tests.npy_files import legacy_npy

LAYOUT = Layout("data/images", "data/labels", "quarantine")
GOOD_LABEL = legacy_npy([["Gate valve", [30, 20, 90, 60], "1"]])


@pytest.fixture
def ingestor(datastore: Datastore, ledger: Ledger) -> LabelIngestor:
    return LabelIngestor(datastore, ledger, LAYOUT, {"1": "Instrument/Valve/Gate valve"}, handler="test")


def test_label_with_its_image_becomes_jsonl_normalised_by_the_true_size(
    datastore: Datastore, ingestor: LabelIngestor
) -> None:
    datastore.write("data/images/sub/p1.jpg", jpeg_bytes(300, 200))
    datastore.write("data/labels/sub/p1_symbols.npy", GOOD_LABEL)
    result = ingestor.ingest_label("data/labels/sub/p1_symbols.npy")
    assert result.outcome is Outcome.CONVERTED and result.jsonl_path == "data/labels/sub/p1.jsonl"
    (record,) = read_jsonl(datastore.read("data/labels/sub/p1.jsonl"))
    assert record["image_url"] == "sub/p1.jpg"
    assert record["image_details"] == {"format": "jpg", "width": 300, "height": 200}
    assert record["label"][0]["topX"] == pytest.approx(0.1) and record["label"][0]["bottomY"] == pytest.approx(0.3)


def test_redelivered_event_rewrites_the_same_bytes(datastore: Datastore, ingestor: LabelIngestor) -> None:
    datastore.write("data/images/p1.png", png_bytes(300, 200))
    datastore.write("data/labels/p1_symbols.npy", GOOD_LABEL)
    ingestor.ingest_label("data/labels/p1_symbols.npy")
    first = datastore.read("data/labels/p1.jsonl")
    assert ingestor.ingest_label("data/labels/p1_symbols.npy").outcome is Outcome.CONVERTED
    assert datastore.read("data/labels/p1.jsonl") == first
    assert read_jsonl(first)[0]["image_details"]["format"] == "png"


def test_label_before_image_waits_and_is_converted_when_image_lands(
    datastore: Datastore, ledger: Ledger, ingestor: LabelIngestor
) -> None:
    datastore.write("data/labels/p2_symbols.npy", GOOD_LABEL)
    assert ingestor.ingest_label("data/labels/p2_symbols.npy").outcome is Outcome.WAITING_FOR_IMAGE
    assert [w.stem for w in ledger.labels.all()] == ["p2"]
    assert not datastore.exists("data/labels/p2.jsonl")
    assert not list(datastore.list("quarantine/"))

    datastore.write("data/images/p2.jpg", jpeg_bytes(300, 200))
    result = ingestor.ingest_image("data/images/p2.jpg")
    assert result is not None and result.outcome is Outcome.CONVERTED
    assert read_jsonl(datastore.read("data/labels/p2.jsonl"))[0]["image_url"] == "p2.jpg"
    assert list(ledger.labels.all()) == []


def test_image_without_label_changes_nothing(datastore: Datastore, ingestor: LabelIngestor) -> None:
    datastore.write("data/images/lonely.jpg", jpeg_bytes(50, 50))
    assert ingestor.ingest_image("data/images/lonely.jpg") is None
    assert ingestor.ingest_image("data/labels/not-an-image.txt") is None


def test_invalid_label_is_moved_to_quarantine_with_its_reason(datastore: Datastore, ingestor: LabelIngestor) -> None:
    bad = legacy_npy([["Gate valve", [30, 20, 90, 60], "1"], ["Mystery", [1, 1, 5, 5], "42"]])
    datastore.write("data/images/p3.jpg", jpeg_bytes(300, 200))
    datastore.write("data/labels/p3_symbols.npy", bad)
    result = ingestor.ingest_label("data/labels/p3_symbols.npy")
    assert result.outcome is Outcome.QUARANTINED
    assert not datastore.exists("data/labels/p3_symbols.npy") and not datastore.exists("data/labels/p3.jsonl")
    assert datastore.read("quarantine/data/labels/p3_symbols.npy") == bad
    reason = json.loads(datastore.read("quarantine/data/labels/p3_symbols.npy.reason.json"))
    assert reason["source"] == "data/labels/p3_symbols.npy"
    assert reason["row"] == 1 and "not in the label map" in reason["reason"] and reason["handler"] == "test"


def test_redelivery_after_quarantine_is_a_no_op(datastore: Datastore, ingestor: LabelIngestor) -> None:
    datastore.write("data/images/p4.jpg", jpeg_bytes(300, 200))
    datastore.write("data/labels/p4_symbols.npy", b"garbage")
    assert ingestor.ingest_label("data/labels/p4_symbols.npy").outcome is Outcome.QUARANTINED
    assert ingestor.ingest_label("data/labels/p4_symbols.npy").outcome is Outcome.GONE
    assert datastore.read("quarantine/data/labels/p4_symbols.npy") == b"garbage"


def test_non_image_named_jpg_is_quarantined_and_its_label_waits_for_a_real_one(
    datastore: Datastore, ledger: Ledger, ingestor: LabelIngestor
) -> None:
    datastore.write("data/images/p5.jpg", b"<html>this is not a jpeg</html>")
    datastore.write("data/labels/p5_symbols.npy", GOOD_LABEL)
    assert ingestor.ingest_label("data/labels/p5_symbols.npy").outcome is Outcome.WAITING_FOR_IMAGE
    assert not datastore.exists("data/images/p5.jpg")
    reason = json.loads(datastore.read("quarantine/data/images/p5.jpg.reason.json"))
    assert "not a readable image" in reason["reason"]
    assert datastore.exists("data/labels/p5_symbols.npy")
    assert [w.stem for w in ledger.labels.all()] == ["p5"]

    datastore.write("data/images/p5.jpg", jpeg_bytes(300, 200))
    converted = ingestor.ingest_image("data/images/p5.jpg")
    assert converted is not None and converted.outcome is Outcome.CONVERTED


def test_quarantine_keeps_an_original_that_changed_after_it_was_read(datastore: Datastore) -> None:
    datastore.write("data/labels/p6_symbols.npy", b"old")
    data, etag = datastore.read_with_etag("data/labels/p6_symbols.npy")
    datastore.write("data/labels/p6_symbols.npy", b"new upload")
    reason = QuarantineReason("bad", "test", "test")
    datastore.quarantine("data/labels/p6_symbols.npy", reason, "quarantine", original_etag=etag, data=data)
    assert datastore.read("data/labels/p6_symbols.npy") == b"new upload"
    assert datastore.read("quarantine/data/labels/p6_symbols.npy") == b"old"


def test_an_oversized_label_is_quarantined_without_being_downloaded_whole(
    ingestor: LabelIngestor, datastore: Datastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrainer.ingestion import ingest

    monkeypatch.setattr(ingest, "MAX_LABEL_FILE_BYTES", 1024)
    big = b"\x93NUMPY" + bytes(range(256)) * 40
    datastore.write("data/labels/huge_symbols.npy", big)
    reads: list[str] = []
    real_read = Datastore.read_with_etag

    def read_recorded(self: Datastore, path: str) -> tuple[bytes, str]:
        reads.append(path)
        return real_read(self, path)

    monkeypatch.setattr(Datastore, "read_with_etag", read_recorded)
    result = ingestor.ingest_label("data/labels/huge_symbols.npy")
    assert result.outcome is Outcome.QUARANTINED and "larger than 1024" in (result.reason or "")
    assert reads == [], "the whole file was never read into memory"
    assert datastore.read("quarantine/data/labels/huge_symbols.npy") == big, "nothing is lost"
    assert not datastore.exists("data/labels/huge_symbols.npy")


def test_files_outside_the_label_folder_are_ignored(ingestor: LabelIngestor) -> None:
    assert ingestor.ingest_label("data/images/x.npy").outcome is Outcome.IGNORED
    assert ingestor.ingest_label("data/labels/x.jsonl").outcome is Outcome.IGNORED


def test_image_landing_leaves_an_already_converted_label_alone(datastore: Datastore, ingestor: LabelIngestor) -> None:
    datastore.write("data/images/p7.jpg", jpeg_bytes(300, 200))
    datastore.write("data/labels/p7_symbols.npy", GOOD_LABEL)
    ingestor.ingest_label("data/labels/p7_symbols.npy")
    etag = datastore.etag("data/labels/p7.jsonl")
    assert ingestor.ingest_image("data/images/p7.jpg") is None
    assert datastore.etag("data/labels/p7.jsonl") == etag


def test_the_timer_sweep_converts_labels_whose_image_event_was_lost(
    datastore: Datastore, ingestor: LabelIngestor, ledger: Ledger
) -> None:
    datastore.write("data/labels/lost_symbols.npy", GOOD_LABEL)
    assert ingestor.ingest_label("data/labels/lost_symbols.npy").outcome is Outcome.WAITING_FOR_IMAGE
    datastore.write("data/labels/gone_symbols.npy", GOOD_LABEL)
    ingestor.ingest_label("data/labels/gone_symbols.npy")
    datastore.delete("data/labels/gone_symbols.npy")
    datastore.write("data/images/lost.jpg", jpeg_bytes(300, 200))  # its BlobCreated event never came
    assert ingestor.sweep_waiting() == 1
    assert read_jsonl(datastore.read("data/labels/lost.jsonl"))[0]["image_url"] == "lost.jpg"
    assert list(ledger.labels.all()) == [], "the deleted label stops waiting too"


def test_quarantining_an_old_invalid_version_keeps_the_newer_valid_ones_jsonl(
    datastore: Datastore, ingestor: LabelIngestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    datastore.write("data/images/v.jpg", jpeg_bytes(300, 200))
    datastore.write("data/labels/v_symbols.npy", b"\x93NUMPY broken version 1")
    real_quarantine = Datastore.quarantine

    def newer_version_lands_meanwhile(
        self: Datastore,
        path: str,
        reason: QuarantineReason,
        quarantine_folder: str,
        *,
        original_etag: str | None,
        data: bytes | None = None,
    ) -> bool:
        monkeypatch.setattr(Datastore, "quarantine", real_quarantine)
        datastore.write("data/labels/v_symbols.npy", GOOD_LABEL)
        assert ingestor.ingest_label("data/labels/v_symbols.npy").outcome is Outcome.CONVERTED
        return real_quarantine(self, path, reason, quarantine_folder, original_etag=original_etag, data=data)

    monkeypatch.setattr(Datastore, "quarantine", newer_version_lands_meanwhile)
    assert ingestor.ingest_label("data/labels/v_symbols.npy").outcome is Outcome.QUARANTINED
    assert datastore.read("data/labels/v_symbols.npy") == GOOD_LABEL
    assert read_jsonl(datastore.read("data/labels/v.jsonl"))[0]["image_url"] == "v.jpg"
    assert datastore.exists("quarantine/data/labels/v_symbols.npy")
