"""Synthetic set generator: deterministic, P&ID-like, shipped in the real layout."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from devtools.synthetic import LABEL_MAP, SheetSpec, generate_sheet, write_dataset_zip
from retrainer.ingestion.labels import parse_label_rows


def test_same_seed_and_index_give_the_same_sheet() -> None:
    first, again, other = generate_sheet(4, 2), generate_sheet(4, 2), generate_sheet(5, 2)
    assert first.rows == again.rows and first.image.tobytes() == again.image.tobytes()
    assert first.rows != other.rows


def test_sheets_hold_many_classes_on_white_paper_with_boxes_inside() -> None:
    seen: set[str] = set()
    for index in range(30):
        sheet = generate_sheet(1, index)
        width, height = sheet.image.size
        pixels = np.asarray(sheet.image.convert("L"))
        assert np.median(pixels) == 255, "white sheets"
        for _name, (x1, y1, x2, y2), class_id in sheet.rows:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert pixels[y1:y2, x1:x2].min() < 128, "every box holds ink"
            seen.add(class_id)
    assert len(LABEL_MAP) >= 8 and seen == set(LABEL_MAP)


def test_a_spec_limited_to_some_classes_draws_only_those() -> None:
    without_drums = SheetSpec(classes=tuple(c for c in LABEL_MAP if c != "10"))
    drawn = {row[2] for i in range(30) for row in generate_sheet(5, i, without_drums).rows}
    assert drawn == set(LABEL_MAP) - {"10"}
    assert "10" in {row[2] for i in range(30) for row in generate_sheet(5, i).rows}


def test_sizes_vary_within_the_spec() -> None:
    spec = SheetSpec(min_side=300, max_side=900)
    sizes = {generate_sheet(2, i, spec).image.size for i in range(10)}
    assert len(sizes) == 10 and all(300 <= side <= 900 for size in sizes for side in size)


def test_zip_has_the_shipped_layout_and_safe_legacy_labels(tmp_path: Path) -> None:
    path = write_dataset_zip(tmp_path / "set.zip", count=3, seed=8, start=10)
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        assert names == [
            "images/sheet_8_00010.jpg",
            "images/sheet_8_00011.jpg",
            "images/sheet_8_00012.jpg",
            "label_map.json",
            "labels/sheet_8_00010_symbols.npy",
            "labels/sheet_8_00011_symbols.npy",
            "labels/sheet_8_00012_symbols.npy",
        ]
        assert json.loads(archive.read("label_map.json")) == LABEL_MAP
        data = archive.read("labels/sheet_8_00010_symbols.npy")
    legacy = np.load(io.BytesIO(data), allow_pickle=True)
    assert legacy.dtype == object and legacy.shape[1] == 3 and isinstance(legacy[0, 2], str)
    assert [box.class_id for box in parse_label_rows(data, "x")] == list(legacy[:, 2])
