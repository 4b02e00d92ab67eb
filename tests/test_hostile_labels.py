"""Hostile label files: every one ends as a LabelFileError (quarantine), none crashes, runs code or blows memory.

The collection is the adversarial review's classes: memory safety of the restricted unpickler
(object data given as raw bytes, i.e. pointers), shapes that ask for far more than the bytes
present, deep nesting, odd values (0-d arrays, 5,000-digit integers, 10**400, '0²'), and dtypes
and scalars that would make numpy read raw memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from retrainer.ingestion.labels import LabelFileError, parse_label_rows
from tests.npy_files import (
    crafted_array,
    crafted_object_npy,
    crafted_scalar,
    legacy_npy,
    numeric_header_only,
    raw_npy,
)

OBJECT = np.dtype(object)


def nested(depth: int) -> list:
    value: list = ["leaf"]
    for _ in range(depth):
        value = [value]
    return value


def hostile_files() -> dict[str, bytes]:
    shared_row = ["Gate valve", [1, 1, 5, 5], "1"] * 300
    return {
        "object data as raw bytes (pointers)": crafted_object_npy(
            crafted_array((2,), OBJECT, b"\x41" * 16), shape=(2,)
        ),
        "object array of 50 million from a few bytes": crafted_object_npy(
            crafted_array((50_000_000,), OBJECT, []), shape=(50_000_000,)
        ),
        "object list shorter than its shape": crafted_object_npy(crafted_array((4,), OBJECT, ["a"]), shape=(4,)),
        "numeric nested array with too few bytes": crafted_object_npy(
            crafted_array((1,), OBJECT, [crafted_array((1_000_000,), np.dtype("<f8"), b"\x00" * 8)]), shape=(1,)
        ),
        "numeric header of 10**12 values over 80 bytes": numeric_header_only((10**12,), b"\x00" * 80),
        "numeric header of 2**62 values": numeric_header_only((2**31, 2**31), b"\x00" * 8),
        "object scalar from raw bytes": crafted_object_npy(
            crafted_array((1,), OBJECT, [crafted_scalar(OBJECT, b"A" * 8)])
        ),
        "scalar with the wrong byte count": crafted_object_npy(
            crafted_array((1,), OBJECT, [crafted_scalar(np.dtype("<i8"), b"A" * 3)])
        ),
        "datetime dtype": numeric_header_only((1, 5), b"\x00" * 40, descr="<M8[s]"),
        "void dtype": numeric_header_only((1, 5), b"\x00" * 40, descr="|V8"),
        "rows nested 400 deep": crafted_object_npy(crafted_array((1,), OBJECT, [nested(400)])),
        "one list shared a million times (memo bomb)": crafted_object_npy(
            crafted_array((1,), OBJECT, [[shared_row] * 4_000]), shape=(1,)
        ),
        "a dict as a value": crafted_object_npy(crafted_array((1,), OBJECT, [{"a": 1}])),
        "bytes as a value": crafted_object_npy(crafted_array((1,), OBJECT, [b"\x00" * 8])),
        "0-d array as a row": raw_npy(np.array([np.array(5, dtype=object), None], dtype=object)),
        "0-d array as a box": legacy_npy([["Gate valve", np.array(3), "1"]]),
        "a coordinate of 5,000 digits": legacy_npy([["Gate valve", [10**4999, 1, 5, 5], "1"]]),
        "a coordinate of 10**400": legacy_npy([["Gate valve", [1, 1, 10**400, 5], "1"]]),
        "a class id of 5,000 digits": legacy_npy([["Gate valve", [1, 1, 5, 5], "9" * 5000]]),
        "class id '0²'": legacy_npy([["Gate valve", [1, 1, 5, 5], "0²"]]),
        "class id '²'": legacy_npy([["Gate valve", [1, 1, 5, 5], "²"]]),
        "class id 10**30": legacy_npy([["Gate valve", [1, 1, 5, 5], 10**30]]),
        "class id 10**5000 (float() of it overflows)": legacy_npy([["Gate valve", [1, 1, 5, 5], 10**5000]]),
        "a global that runs code": crafted_object_npy(crafted_array((1,), OBJECT, [print])),
    }


@pytest.mark.parametrize("name", sorted(hostile_files()))
def test_a_hostile_label_file_is_a_clear_error(name: str) -> None:
    with pytest.raises(LabelFileError) as refused:
        parse_label_rows(hostile_files()[name], f"data/labels/{name}.npy")
    assert len(str(refused.value)) < 600, "the reason stays readable"


def test_a_crafted_label_cannot_crash_or_exhaust_the_interpreter(tmp_path: Path) -> None:
    """Every hostile file parsed in one child process with a 1 GiB address-space cap: it must finish normally."""
    for index, data in enumerate(hostile_files().values()):
        (tmp_path / f"{index}.npy").write_bytes(data)
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        from pathlib import Path
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
        from retrainer.ingestion.labels import LabelFileError, parse_label_rows
        outcomes = {{}}
        for path in sorted(Path({str(tmp_path)!r}).glob("*.npy")):
            try:
                parse_label_rows(path.read_bytes(), path.name)
                outcomes[path.name] = "accepted"
            except LabelFileError:
                outcomes[path.name] = "refused"
        print(json.dumps(outcomes))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(outcomes.values()) == {"refused"} and len(outcomes) == len(hostile_files())


def test_the_legacy_layout_with_numpy_values_still_loads() -> None:
    rows: list[list[object]] = [
        ["Gate valve", np.array([10, 10, 50, 30]), np.int64(3)],
        ["Ball valve", [1.5, 2, 8, 9], "04"],
    ]
    boxes = parse_label_rows(legacy_npy(rows), "ok.npy")
    assert [(b.class_id, b.x1, b.y2) for b in boxes] == [("3", 10.0, 30.0), ("4", 1.5, 9.0)]
