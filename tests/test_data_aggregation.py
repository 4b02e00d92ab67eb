"""Step 1, data aggregation: per-image JSONL -> one MLTable with absolute image URLs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_steps import data_aggregation
from pipeline_steps.data_aggregation import NothingToAggregateError, aggregate
from shared.mltable_io import read_records
from tests.helpers import load_with_mltable, record

AZUREML_PREFIX = (
    "azureml://subscriptions/s/resourcegroups/rg/workspaces/ws/datastores/workspaceblobstore/paths/data/images"
)


def lay_out(root: Path, items: dict[str, list[str]], missing: tuple[str, ...] = ()) -> tuple[Path, Path]:
    images, labels = root / "images", root / "labels"
    for image, classes in items.items():
        stem = image.rsplit(".", 1)[0]
        (labels / stem).parent.mkdir(parents=True, exist_ok=True)
        (labels / f"{stem}.jsonl").write_text(json.dumps(record(image, classes)) + "\n")
        (labels / f"{stem}_symbols.npy").write_bytes(b"not read by this step")
        if image not in missing:
            (images / image).parent.mkdir(parents=True, exist_ok=True)
            (images / image).write_bytes(b"jpeg")
    return images, labels


def test_records_get_the_absolute_prefix_and_keep_subfolders(tmp_path: Path) -> None:
    images, labels = lay_out(tmp_path, {"a.jpg": ["1"], "area1/b.jpg": ["2", "2"], "area1/deep/c.png": []})
    summary = aggregate(images, labels, AZUREML_PREFIX + "/", tmp_path / "out")
    urls = [r["image_url"] for r in read_records(tmp_path / "out")]
    assert urls == [f"{AZUREML_PREFIX}/a.jpg", f"{AZUREML_PREFIX}/area1/b.jpg", f"{AZUREML_PREFIX}/area1/deep/c.png"]
    assert (summary.label_files, summary.records, summary.boxes) == (3, 3, 3)
    assert (tmp_path / "out" / "MLTable").is_file()


def test_missing_images_and_malformed_lines_are_left_out_and_reported(tmp_path: Path) -> None:
    images, labels = lay_out(tmp_path, {"a.jpg": ["1"], "gone.jpg": ["1"]}, missing=("gone.jpg",))
    (labels / "broken.jsonl").write_text('{"image_url": "a.jpg", "label": [\n{"no_url": 1}\n')
    (labels / "escape.jsonl").write_text(json.dumps(record("../../etc/passwd", [])) + "\n")
    summary = aggregate(images, labels, "file:///x", tmp_path / "out")
    assert summary.records == 1
    report = json.loads((tmp_path / "out" / "aggregation_summary.json").read_text())
    assert report["missing_images"] == {"count": 1, "examples": ["gone.jsonl:1: gone.jpg"]}
    assert report["malformed"]["count"] == 3
    assert any("not JSON" in e for e in report["malformed"]["examples"])
    assert any("outside the image folder" in e for e in report["malformed"]["examples"])


def test_step_fails_only_when_nothing_usable_remains(tmp_path: Path) -> None:
    images, labels = lay_out(tmp_path, {"gone.jpg": ["1"]}, missing=("gone.jpg",))
    with pytest.raises(NothingToAggregateError, match="1 with missing images"):
        aggregate(images, labels, "file:///x", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "aggregation_summary.json").read_text())["records"] == 0


@pytest.mark.slow  # the real mltable, in its own interpreter
def test_local_output_loads_with_mltable_and_opens_the_images(tmp_path: Path) -> None:
    images, labels = lay_out(tmp_path, {"a.jpg": ["1"], "sub/b.jpg": ["3"]})
    code = data_aggregation.main(
        [
            "--input_image_data_path",
            str(images),
            "--input-label-data-path",
            str(labels),
            "--output_path",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0
    loaded = load_with_mltable(tmp_path / "o")
    assert loaded["columns"] == ["image_url", "image_details", "label"]
    assert loaded["rows"] == 2
    assert loaded["images"][1] == "jpeg"


def test_cli_reports_failure_with_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "labels").mkdir()
    code = data_aggregation.main(
        [
            "--input-image-data-path",
            str(tmp_path),
            "--input-label-data-path",
            str(tmp_path / "labels"),
            "--input-images-string-absolute-path",
            "file:///x",
            "--output_path",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1 and "no usable record in 0 label files" in capsys.readouterr().err
