"""Label conversion core: both layouts, every validation rule, and no pickle ever executed."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from retrainer.ingestion.labels import (
    LabelFileError,
    convert_label_file,
    parse_label_map,
    parse_label_rows,
    record_to_jsonl,
)
from tests.npy_files import legacy_npy, malicious_npy, numeric_npy, raw_npy

LABEL_MAP = {"1": "Instrument/Valve/Gate valve", "2": "Piping/Fitting/Flange", "10": "Equipment/Vessel/Drum"}


def convert(data: bytes, width: int = 200, height: int = 100, label_map: dict[str, str] | None = None) -> dict:
    return convert_label_file(
        data,
        file_name="labels/a_symbols.npy",
        image_url="a.jpg",
        width=width,
        height=height,
        image_format="jpg",
        label_map=label_map,
    )


def test_legacy_rows_are_normalised_by_the_image_size() -> None:
    record = convert(legacy_npy([["Gate valve", [20, 10, 60, 30], "1"], ["Flange", [0, 0, 200, 100], 2]]))
    assert record["image_url"] == "a.jpg"
    assert record["image_details"] == {"format": "jpg", "width": 200, "height": 100}
    first, second = record["label"]
    assert first == {"label": "1", "topX": 0.1, "topY": 0.1, "bottomX": 0.3, "bottomY": 0.3, "isCrowd": 0}
    assert (second["topX"], second["topY"], second["bottomX"], second["bottomY"]) == (0.0, 0.0, 1.0, 1.0)
    assert second["label"] == "2"


def test_numeric_rows_with_class_id_first_are_accepted() -> None:
    record = convert(numeric_npy([[10, 50, 25, 150, 75]]), label_map=LABEL_MAP)
    assert record["label"] == [
        {"label": "10", "topX": 0.25, "topY": 0.25, "bottomX": 0.75, "bottomY": 0.75, "isCrowd": 0}
    ]


def test_integer_numeric_layout_is_accepted() -> None:
    assert convert(numeric_npy([[1, 0, 0, 5, 5]], dtype="int32"))["label"][0]["label"] == "1"


@pytest.mark.parametrize(
    "empty",
    [legacy_npy([]), numeric_npy([]), raw_npy(np.array([], dtype=object)), raw_npy(np.array([]))],
    ids=["legacy", "numeric", "object-1d", "float-1d"],
)
def test_an_empty_array_is_an_image_without_symbols(empty: bytes) -> None:
    assert convert(empty)["label"] == []


def test_numpy_scalars_inside_object_rows_are_read() -> None:
    data = legacy_npy([["Gate valve", [np.int64(1), np.float32(2), 3, 4], np.int64(1)]])
    assert convert(data)["label"][0]["label"] == "1"


def test_malicious_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = malicious_npy(marker)
    with pytest.raises(LabelFileError, match="not allowed"):
        convert(payload)
    assert not marker.exists()
    # The payload is live: numpy's unsafe loader would have run it.
    np.load(io.BytesIO(payload), allow_pickle=True)
    assert marker.exists()


@pytest.mark.parametrize("cut", [5, 40, -3])
def test_truncated_npy_is_an_error(cut: int) -> None:
    data = legacy_npy([["Gate valve", [1, 2, 3, 4], "1"]])
    with pytest.raises(LabelFileError, match=r"labels/a_symbols\.npy: file:"):
        convert(data[:cut])


def test_truncated_numeric_npy_is_an_error() -> None:
    with pytest.raises(LabelFileError, match="truncated"):
        convert(numeric_npy([[1, 1, 1, 2, 2]])[:-8])


def test_not_an_npy_file_is_an_error() -> None:
    with pytest.raises(LabelFileError, match=r"not a valid \.npy"):
        convert(b"PK\x03\x04 this is a zip, not an npy")


@pytest.mark.parametrize(
    ("array", "rule"),
    [
        (np.zeros((2, 4)), r"shape \(2, 4\)"),
        (np.zeros((2, 5, 1)), r"shape \(2, 5, 1\)"),
        (np.array([["a", "b", "c", "d", "e"]]), "dtype <U1"),
        (np.array([[True, False, True, True, True]]), "dtype bool"),
        (np.array([[1 + 1j] * 5]), "dtype complex"),
        (np.empty((1, 4), dtype=object), r"object array of shape \(1, 4\)"),
    ],
)
def test_wrong_shapes_and_dtypes_are_errors(array: np.ndarray, rule: str) -> None:
    with pytest.raises(LabelFileError, match=rule):
        convert(raw_npy(array))


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        (["Gate valve", [1, 2, 3], "1"], "4 numbers"),
        (["Gate valve", "1 2 3 4", "1"], "4 numbers"),
        (["Gate valve", [1, 2, "x", 4], "1"], "'x' is not a number"),
        (["Gate valve", [1, 2, True, 4], "1"], "True is not a number"),
        ([7, [1, 2, 3, 4], "1"], "symbol name must be a string"),
        (["Gate valve", [1, 2, 3, 4], "valve"], "class id 'valve' is not an integer"),
        (["Gate valve", [1, 2, 3, 4], 1.5], "class id 1.5 is not an integer"),
        (["Gate valve", [1, 2, 3, 4], None], "class id None is not an integer"),
    ],
)
def test_malformed_legacy_rows_name_file_row_and_rule(row: list[object], rule: str) -> None:
    data = legacy_npy([["Gate valve", [1, 1, 2, 2], "1"], row])
    with pytest.raises(LabelFileError, match=rule) as caught:
        convert(data)
    assert caught.value.row == 1
    assert str(caught.value).startswith("labels/a_symbols.npy: row 1: ")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_coordinates_are_errors_in_both_layouts(bad: float) -> None:
    with pytest.raises(LabelFileError, match="finite") as legacy:
        convert(legacy_npy([["Gate valve", [1, 1, bad, 2], "1"]]))
    with pytest.raises(LabelFileError, match="finite") as numeric:
        convert(numeric_npy([[1, 1, 1, 2, 2], [1, 1, bad, 2, 2]]))
    assert (legacy.value.row, numeric.value.row) == (0, 1)


@pytest.mark.parametrize("box", [[30, 10, 20, 20], [10, 30, 20, 20], [10, 10, 10, 20]])
def test_inverted_or_empty_boxes_are_errors(box: list[int]) -> None:
    with pytest.raises(LabelFileError, match="x1 < x2 and y1 < y2"):
        convert(legacy_npy([["Gate valve", box, "1"]]))


def test_overshoot_up_to_two_pixels_is_clipped() -> None:
    record = convert(legacy_npy([["Gate valve", [-2, -1.5, 202, 101], "1"]]))
    label = record["label"][0]
    assert (label["topX"], label["topY"], label["bottomX"], label["bottomY"]) == (0.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize("box", [[-3, 0, 10, 10], [0, 0, 203, 10], [0, 0, 10, 102.5], [250, 10, 260, 20]])
def test_boxes_outside_the_image_by_more_than_two_pixels_are_errors(box: list[float]) -> None:
    with pytest.raises(LabelFileError, match="outside the 200x100 image"):
        convert(legacy_npy([["Gate valve", box, "1"]]))


def test_unknown_class_id_is_an_error_when_a_label_map_is_configured() -> None:
    data = legacy_npy([["Gate valve", [1, 1, 5, 5], "1"], ["Mystery", [1, 1, 5, 5], "99"]])
    assert len(convert(data)["label"]) == 2
    with pytest.raises(LabelFileError, match="class id '99' is not in the label map") as caught:
        convert(data, label_map=LABEL_MAP)
    assert caught.value.row == 1


def test_the_same_record_always_gives_the_same_bytes() -> None:
    data = legacy_npy([["Gate valve", [20, 10, 60, 30], "1"]])
    first, second = record_to_jsonl(convert(data)), record_to_jsonl(convert(data))
    assert first == second and first.endswith(b"\n") and first.count(b"\n") == 1
    assert json.loads(first)["label"][0]["label"] == "1"


def test_parse_label_rows_without_image_keeps_pixels() -> None:
    (box,) = parse_label_rows(legacy_npy([["Gate valve", [20, 10, 60, 30], " 1 "]]), "x.npy")
    assert (box.class_id, box.x1, box.y1, box.x2, box.y2) == ("1", 20.0, 10.0, 60.0, 30.0)


def test_label_map_keys_must_be_integer_ids() -> None:
    assert parse_label_map(b'{"01": "A/B/C"}', "map.json") == {"1": "A/B/C"}
    with pytest.raises(ValueError, match="'valve' is not an integer"):
        parse_label_map(b'{"valve": "A/B/C"}', "map.json")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_label_map(b"{", "map.json")
