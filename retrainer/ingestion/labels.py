"""Label files (.npy) to AutoML for Images object-detection records, without executing any pickle.

Two layouts are accepted (see README, "Label files"):
- legacy object rows `[symbol_name, [x1, y1, x2, y2], class_id]`, stored by numpy as a pickle;
  it is rebuilt with a restricted unpickler that can only make numpy arrays of plain values;
- numeric rows `[class_id, x1, y1, x2, y2]` of shape (N, 5), read with `allow_pickle=False`.

Every row is validated; the first invalid row makes the whole file invalid, with an error naming
the file, the row and the rule. Pure: no I/O beyond the bytes given.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import pickle
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, cast

import numpy as np
from numpy.lib import format as npy_format

#: How far (pixels) a box may overshoot the image before it is an error rather than clipped.
EDGE_TOLERANCE_PX = 2.0
#: Label files above this size are refused before parsing.
MAX_LABEL_FILE_BYTES = 16 * 1024 * 1024

_LEGACY_ROW_LENGTH = 3
_NUMERIC_ROW_LENGTH = 5


class LabelFileError(ValueError):
    """A label file is invalid. `row` is the 0-based row index, or None for the whole file."""

    def __init__(self, file_name: str, rule: str, row: int | None = None) -> None:
        self.file_name = file_name
        self.rule = rule
        self.row = row
        where = f"row {row}" if row is not None else "file"
        super().__init__(f"{file_name}: {where}: {rule}")


@dataclass(frozen=True, slots=True)
class SymbolBox:
    """One labelled symbol in pixel coordinates."""

    class_id: str
    x1: float
    y1: float
    x2: float
    y2: float


#: Bounds on what a label file may describe: a sheet has at most thousands of symbols.
MAX_ELEMENTS = 1_000_000
MAX_NESTING = 6
_CLASS_ID = re.compile(r"^\s*-?[0-9]{1,9}\s*$")
_SAFE_DTYPE_KINDS = frozenset("biufU")


class _Refused(ValueError):
    """The payload asks for something a label file never holds."""


class _NdarrayToken:
    """Stands for `numpy.ndarray` in the pickle: only `_reconstruct` may use it."""


class _DtypeSpec:
    """A dtype as the pickle names it; rebuilt from its type string only, never from raw pickled state."""

    def __init__(self, type_string: object, align: object = False, copy: object = True) -> None:
        if not isinstance(type_string, str) or len(type_string) > 16:
            raise _Refused("dtype must be named by a short type string")
        self.type_string = type_string
        self.byte_order = "|"

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byte_order = str(state[1])

    def dtype(self) -> np.dtype:
        try:
            dtype = np.dtype(self.type_string)
        except (TypeError, ValueError) as error:
            raise _Refused(f"unknown dtype {self.type_string[:16]!r}") from error
        if dtype.kind == "O":
            return dtype
        if dtype.kind not in _SAFE_DTYPE_KINDS:
            raise _Refused(f"dtype {dtype} is not allowed in a label file")
        if self.byte_order == "<":
            return dtype.newbyteorder("<")
        return dtype.newbyteorder(">") if self.byte_order == ">" else dtype


class _ArraySpec:
    """An array as the pickle describes it; checked against its own shape before anything is allocated."""

    def __init__(self) -> None:
        self.state: tuple = ()

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("array state must be (version, shape, dtype, fortran, data)")
        self.state = state


def _reconstruct_spec(cls: object, shape: object, typecode: object) -> _ArraySpec:
    if cls is not _NdarrayToken:
        raise _Refused("only numpy arrays may be rebuilt")
    return _ArraySpec()


def _scalar(dtype: object, data: object) -> int | float | str | bool:
    """A numpy scalar of a plain kind, from exactly its own bytes (an object scalar would be a raw pointer)."""
    if not isinstance(dtype, _DtypeSpec) or not isinstance(data, bytes):
        raise _Refused("scalar must be a dtype and its bytes")
    resolved = dtype.dtype()
    if resolved.kind == "O" or len(data) != resolved.itemsize:
        raise _Refused(f"scalar of dtype {resolved} with {len(data)} bytes")
    return np.frombuffer(data, dtype=resolved)[0].item()


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Rebuilds descriptions of numpy arrays of plain values and refuses every other global.

    Nothing numpy would run on untrusted state is called: arrays and dtypes come back as specs,
    which `_materialize` checks (sizes against the bytes present, object data only as lists of
    plain values) before it allocates anything.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct_spec,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct_spec,
        ("numpy._core.multiarray", "scalar"): _scalar,
        ("numpy.core.multiarray", "scalar"): _scalar,
        ("numpy", "ndarray"): _NdarrayToken,
        ("numpy", "dtype"): _DtypeSpec,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module[:64]}.{name[:64]}' is not allowed in a label file") from None

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("persistent ids are not allowed in a label file")


class _Budget:
    def __init__(self) -> None:
        self.elements = 0

    def spend(self, count: int) -> None:
        self.elements += count
        if self.elements > MAX_ELEMENTS:
            raise _Refused(f"more than {MAX_ELEMENTS} values")


def _element_count(shape: object) -> tuple[tuple[int, ...], int]:
    if not isinstance(shape, tuple) or len(shape) > 8 or not all(type(n) is int and n >= 0 for n in shape):
        raise _Refused("shape must be a tuple of non-negative integers")
    count = 1
    for n in shape:
        count *= n
        if count > MAX_ELEMENTS:
            raise _Refused(f"shape {shape} holds more than {MAX_ELEMENTS} values")
    return shape, count


def _materialize(value: object, budget: _Budget, depth: int = 0) -> object:
    """Plain Python values and checked numpy arrays from what the restricted unpickler produced."""
    if depth > MAX_NESTING:
        raise _Refused(f"values nested more than {MAX_NESTING} deep")
    if value is None or type(value) in (str, int, float, bool):
        budget.spend(1)
        return value
    if type(value) in (list, tuple):
        items = cast("list[object] | tuple[object, ...]", value)
        budget.spend(len(items))
        return [_materialize(item, budget, depth + 1) for item in items]
    if isinstance(value, _ArraySpec):
        return _array(value, budget, depth)
    raise _Refused(f"a {type(value).__name__} is not a label value")


def _array(spec: _ArraySpec, budget: _Budget, depth: int) -> np.ndarray:
    if not spec.state:
        raise _Refused("array without state")
    _, shape, dtype_spec, fortran, data = spec.state
    shape, count = _element_count(shape)
    if not isinstance(dtype_spec, _DtypeSpec):
        raise _Refused("array dtype must be a numpy dtype")
    dtype = dtype_spec.dtype()
    order: Literal["C", "F"] = "F" if fortran is True else "C"
    budget.spend(count)
    if dtype.kind == "O":
        if type(data) is not list or len(data) != count:
            raise _Refused(f"object array of {count} values needs a list of {count} values")
        array = np.empty(count, dtype=object)
        for index, item in enumerate(data):
            array[index] = _materialize(item, budget, depth + 1)
        return array.reshape(shape, order=order)
    if type(data) is not bytes or len(data) != count * dtype.itemsize:
        raise _Refused(f"{dtype} array of shape {shape} needs {count * dtype.itemsize} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy()


def load_label_array(npy_bytes: bytes, file_name: str) -> np.ndarray:
    """Parse .npy bytes into an array; object arrays are unpickled with the restricted unpickler."""
    if len(npy_bytes) > MAX_LABEL_FILE_BYTES:
        raise LabelFileError(file_name, f"file is larger than {MAX_LABEL_FILE_BYTES} bytes")
    stream = io.BytesIO(npy_bytes)
    try:
        version = npy_format.read_magic(stream)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
        shape, count = _element_count(tuple(shape))
    except (ValueError, EOFError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        raise LabelFileError(file_name, f"not a valid .npy file ({_short(error)})") from None
    if not dtype.hasobject:
        if dtype.kind not in _SAFE_DTYPE_KINDS:
            raise LabelFileError(file_name, f"dtype {dtype} is not allowed in a label file")
        if len(npy_bytes) - stream.tell() != count * dtype.itemsize:
            raise LabelFileError(
                file_name,
                f"truncated or padded data: the header declares {count} values of {dtype} "
                f"({count * dtype.itemsize} bytes), the file holds {len(npy_bytes) - stream.tell()}",
            )
        stream.seek(0)
        try:
            return npy_format.read_array(stream, allow_pickle=False)
        except (ValueError, EOFError) as error:
            raise LabelFileError(file_name, f"truncated or corrupt .npy data ({_short(error)})") from None
    try:
        loaded = _ArrayOnlyUnpickler(stream).load()
        array = _materialize(loaded, _Budget()) if isinstance(loaded, _ArraySpec) else None
    except Exception as error:  # untrusted bytes: any failure to rebuild means an invalid file
        raise LabelFileError(file_name, f"object payload refused ({type(error).__name__}: {_short(error)})") from None
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise LabelFileError(file_name, "object payload does not match the .npy header")
    if fortran_order:
        array = np.asfortranarray(array)
    return array


def _short(value: object, limit: int = 200) -> str:
    """A bounded description of an untrusted value, for error messages."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"  # str() refuses 4,300+ digits
    text = reprlib.repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_label_rows(npy_bytes: bytes, file_name: str, label_map: Mapping[str, str] | None = None) -> list[SymbolBox]:
    """All symbols of a label file in pixels, unvalidated against an image size."""
    array = load_label_array(npy_bytes, file_name)
    if array.size == 0:
        return []
    if array.dtype.hasobject:
        rows = [_legacy_row(row, index, file_name) for index, row in enumerate(_object_rows(array, file_name))]
    else:
        rows = _numeric_rows(array, file_name)
    if label_map is not None:
        for index, box in enumerate(rows):
            if box.class_id not in label_map:
                raise LabelFileError(file_name, f"class id {box.class_id!r} is not in the label map", index)
    return rows


def _object_rows(array: np.ndarray, file_name: str) -> list[object]:
    if (array.ndim == 2 and array.shape[1] == _LEGACY_ROW_LENGTH) or array.ndim == 1:
        return array.tolist()
    raise LabelFileError(file_name, f"object array of shape {array.shape}; expected (N, 3) rows [name, box, class id]")


def _as_sequence(value: object) -> Sequence[object] | None:
    """The value as a sequence of items when it is a list, tuple or array (not a string), else None."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return None
    if type(value) in (list, tuple) or (
        isinstance(value, (np.ndarray, Sequence)) and not isinstance(value, (str, bytes))
    ):
        return cast("Sequence[object]", value)
    return None


def _legacy_row(row: object, index: int, file_name: str) -> SymbolBox:
    items = _as_sequence(row)
    if items is None or len(items) != _LEGACY_ROW_LENGTH:
        raise LabelFileError(file_name, "row must be [symbol_name, [x1, y1, x2, y2], class_id]", index)
    name, box, class_id = items
    if not isinstance(name, str):
        raise LabelFileError(file_name, f"symbol name must be a string, got {type(name).__name__}", index)
    coordinates = _as_sequence(box)
    if coordinates is None or len(coordinates) != 4:
        raise LabelFileError(file_name, "box must be a list of 4 numbers [x1, y1, x2, y2]", index)
    x1, y1, x2, y2 = (_finite_number(value, index, file_name) for value in coordinates)
    return SymbolBox(_class_id(class_id, index, file_name), x1, y1, x2, y2)


def _numeric_rows(array: np.ndarray, file_name: str) -> list[SymbolBox]:
    if array.dtype.kind not in "iuf":
        raise LabelFileError(file_name, f"numeric label array must be integers or floats, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != _NUMERIC_ROW_LENGTH:
        raise LabelFileError(
            file_name, f"numeric array of shape {array.shape}; expected (N, 5) rows [class_id, x1, y1, x2, y2]"
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise LabelFileError(file_name, "values must be finite numbers (no NaN or infinity)", int(np.argmin(finite)))
    return [
        SymbolBox(_class_id(row[0], index, file_name), float(row[1]), float(row[2]), float(row[3]), float(row[4]))
        for index, row in enumerate(array.tolist())
    ]


def _finite_number(value: object, index: int, file_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LabelFileError(file_name, f"box coordinate {_short(value)} is not a number", index)
    try:
        number = float(value)
    except OverflowError:
        raise LabelFileError(file_name, "values must be finite numbers (no NaN or infinity)", index) from None
    if not math.isfinite(number):
        raise LabelFileError(file_name, "values must be finite numbers (no NaN or infinity)", index)
    return number


def _class_id(value: object, index: int, file_name: str) -> str:
    """Class ids are small integers, given as ASCII digits or numbers (never '²' or 5,000 digits)."""
    if isinstance(value, str) and _CLASS_ID.fullmatch(value):
        return str(int(value.strip()))
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if abs(int(value)) < 10**9:
            return str(int(value))
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):  # float() of a huge int overflows
        number = float(value)
        if math.isfinite(number) and number.is_integer() and abs(number) < 10**9:
            return str(int(number))
    raise LabelFileError(file_name, f"class id {_short(value)} is not an integer", index)


def clip_to_image(box: SymbolBox, width: int, height: int, index: int, file_name: str) -> SymbolBox:
    """Check the box's order and bounds, clipping an overshoot of up to EDGE_TOLERANCE_PX."""
    if not (box.x1 < box.x2 and box.y1 < box.y2):
        raise LabelFileError(file_name, f"box must have x1 < x2 and y1 < y2, got {_coords(box)}", index)
    low_x, low_y = -EDGE_TOLERANCE_PX, -EDGE_TOLERANCE_PX
    high_x, high_y = width + EDGE_TOLERANCE_PX, height + EDGE_TOLERANCE_PX
    if box.x1 < low_x or box.y1 < low_y or box.x2 > high_x or box.y2 > high_y:
        raise LabelFileError(
            file_name,
            f"box {_coords(box)} lies outside the {width}x{height} image by more than {EDGE_TOLERANCE_PX:g} px",
            index,
        )
    if box.x1 >= 0 and box.y1 >= 0 and box.x2 <= width and box.y2 <= height:
        return box
    clipped = SymbolBox(
        box.class_id, max(box.x1, 0.0), max(box.y1, 0.0), min(box.x2, float(width)), min(box.y2, float(height))
    )
    if not (clipped.x1 < clipped.x2 and clipped.y1 < clipped.y2):
        raise LabelFileError(file_name, f"box {_coords(box)} has no area inside the image", index)
    return clipped


def _coords(box: SymbolBox) -> str:
    return f"[{box.x1:g}, {box.y1:g}, {box.x2:g}, {box.y2:g}]"


def to_automl_record(
    boxes: Sequence[SymbolBox], *, image_url: str, width: int, height: int, image_format: str, file_name: str
) -> dict[str, object]:
    """One AutoML JSONL record: box coordinates normalised by the true image size."""
    if width <= 0 or height <= 0:
        raise LabelFileError(file_name, f"image size {width}x{height} is not positive")
    labels = []
    for index, box in enumerate(boxes):
        box = clip_to_image(box, width, height, index, file_name)
        labels.append(
            {
                "label": box.class_id,
                "topX": box.x1 / width,
                "topY": box.y1 / height,
                "bottomX": box.x2 / width,
                "bottomY": box.y2 / height,
                "isCrowd": 0,
            }
        )
    return {
        "image_url": image_url,
        "image_details": {"format": image_format, "width": width, "height": height},
        "label": labels,
    }


def convert_label_file(
    npy_bytes: bytes,
    *,
    file_name: str,
    image_url: str,
    width: int,
    height: int,
    image_format: str,
    label_map: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Parse, validate and convert one label file into its AutoML record."""
    boxes = parse_label_rows(npy_bytes, file_name, label_map)
    return to_automl_record(
        boxes, image_url=image_url, width=width, height=height, image_format=image_format, file_name=file_name
    )


def record_to_jsonl(record: Mapping[str, object]) -> bytes:
    """The record as one JSONL line; the same record always gives the same bytes."""
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def parse_label_map(data: bytes, source: str) -> dict[str, str]:
    """A label map `{"1": "Instrument/Valve/Gate valve", ...}` with integer-string keys."""
    try:
        mapping = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{source}: label map is not valid JSON ({error})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ValueError(f"{source}: label map must be a JSON object of class id -> name")
    normalised = {}
    for key, name in mapping.items():
        if not key.strip().lstrip("-").isdigit():
            raise ValueError(f"{source}: label map key {key!r} is not an integer class id")
        normalised[str(int(key))] = name
    return normalised
