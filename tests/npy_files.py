"""Builders of label files for tests: good ones in both layouts and hostile ones."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format


def legacy_npy(rows: list[list[object]]) -> bytes:
    array = np.empty((len(rows), 3), dtype=object)
    for i, row in enumerate(rows):
        array[i, 0], array[i, 1], array[i, 2] = row
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def numeric_npy(rows: list[list[float]], dtype: str = "float64") -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(rows, dtype=dtype).reshape(-1, 5) if rows else np.zeros((0, 5), dtype=dtype))
    return buffer.getvalue()


def raw_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


class _TouchFile:
    """Unpickling this creates a file: the proof that a loader executed the payload."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.target,))


def malicious_npy(marker: Path) -> bytes:
    """A valid .npy header for an object array whose pickle payload writes `marker` when loaded unsafely."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    pickle.dump(_TouchFile(marker), buffer, protocol=3)
    return buffer.getvalue()


class _Reduced:
    """Pickles as `callable(*arguments)` followed by BUILD with `state`: how numpy pickles arrays."""

    def __init__(self, callable_: object, arguments: tuple, state: object = None) -> None:
        self.reduced = (callable_, arguments) if state is None else (callable_, arguments, state)

    def __reduce__(self) -> tuple:
        return self.reduced


def crafted_object_npy(payload: object, shape: tuple[int, ...] = (1,)) -> bytes:
    """A valid object-array .npy header followed by an arbitrary pickle payload."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": "|O", "fortran_order": False, "shape": shape})
    pickle.dump(payload, buffer, protocol=3)
    return buffer.getvalue()


def crafted_array(shape: tuple[int, ...], dtype: np.dtype, data: object) -> _Reduced:
    """An array pickle whose state is chosen by the attacker (numpy's own `_reconstruct` + BUILD)."""
    from numpy._core.multiarray import _reconstruct

    return _Reduced(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


def crafted_scalar(dtype: np.dtype, data: bytes) -> _Reduced:
    from numpy._core.multiarray import scalar

    return _Reduced(scalar, (dtype, data))


def numeric_header_only(shape: tuple[int, ...], data: bytes, descr: str = "<f8") -> bytes:
    """A numeric .npy whose header declares `shape` but whose data is `data`."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data
