"""Synthetic P&ID-like sheets with labelled symbols, shipped exactly as the real image sets are.

A set is a zip with `images/<stem>.jpg`, `labels/<stem>_symbols.npy` (legacy object rows
`[symbol_name, [x1, y1, x2, y2], class_id]`, class id as a string) and `label_map.json`.
Sheets are white, crossed by pipes (distractors) that carry the symbols; several classes are
look-alikes that differ by one stroke, as real P&ID legends do. Deterministic by seed: sheet `i`
of seed `s` is the same whatever the count.

Run: `python -m devtools.synthetic --count 200 --seed 7 --output sets/train.zip`
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Class id -> name, shaped `<Instrument|Piping|Equipment>/<Subcategory>/<Label>`.
LABEL_MAP: dict[str, str] = {
    "1": "Instrument/Valve/Gate valve",
    "2": "Instrument/Valve/Globe valve",
    "3": "Instrument/Valve/Check valve",
    "4": "Instrument/Valve/Ball valve",
    "5": "Instrument/Indicator/Field instrument",
    "6": "Instrument/Indicator/Panel instrument",
    "7": "Piping/Fitting/Reducer",
    "8": "Piping/Fitting/Flange",
    "9": "Equipment/Pump/Centrifugal pump",
    "10": "Equipment/Vessel/Drum",
}

Box = tuple[int, int, int, int]
_INK = 0
_PAPER = 255


def _bowtie(draw: ImageDraw.ImageDraw, box: Box) -> None:
    x1, y1, x2, y2 = box
    cy = (y1 + y2) // 2
    cx = (x1 + x2) // 2
    draw.polygon([(x1, y1), (cx, cy), (x1, y2)], outline=_INK, width=2)
    draw.polygon([(x2, y1), (cx, cy), (x2, y2)], outline=_INK, width=2)


def _gate_valve(draw: ImageDraw.ImageDraw, box: Box) -> None:
    _bowtie(draw, box)


def _globe_valve(draw: ImageDraw.ImageDraw, box: Box) -> None:
    _bowtie(draw, box)
    x1, y1, x2, y2 = box
    r = max(2, (x2 - x1) // 8)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_INK)


def _check_valve(draw: ImageDraw.ImageDraw, box: Box) -> None:
    # The extra stroke is a bar through the waist. A bar at the outflow end would lie on the bowtie's
    # own end edge and only thicken it by a pixel (this set's first version did that).
    _bowtie(draw, box)
    x1, y1, x2, y2 = box
    cx = (x1 + x2) // 2
    draw.line([(cx, y1), (cx, y2)], fill=_INK, width=2)


def _ball_valve(draw: ImageDraw.ImageDraw, box: Box) -> None:
    _bowtie(draw, box)
    x1, y1, x2, y2 = box
    r = max(3, (x2 - x1) // 5)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=_INK, fill=_PAPER, width=2)


def _field_instrument(draw: ImageDraw.ImageDraw, box: Box) -> None:
    draw.ellipse(box, outline=_INK, width=2)


def _panel_instrument(draw: ImageDraw.ImageDraw, box: Box) -> None:
    draw.ellipse(box, outline=_INK, width=2)
    x1, y1, x2, y2 = box
    cy = (y1 + y2) // 2
    draw.line([(x1, cy), (x2, cy)], fill=_INK, width=2)


def _reducer(draw: ImageDraw.ImageDraw, box: Box) -> None:
    x1, y1, x2, y2 = box
    h = y2 - y1
    draw.polygon([(x1, y1), (x2, y1 + h // 4), (x2, y2 - h // 4), (x1, y2)], outline=_INK, width=2)


def _flange(draw: ImageDraw.ImageDraw, box: Box) -> None:
    x1, y1, x2, y2 = box
    draw.line([(x1 + 1, y1), (x1 + 1, y2)], fill=_INK, width=3)
    draw.line([(x2 - 2, y1), (x2 - 2, y2)], fill=_INK, width=3)


def _pump(draw: ImageDraw.ImageDraw, box: Box) -> None:
    x1, y1, x2, y2 = box
    draw.ellipse(box, outline=_INK, width=2)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    draw.line([(cx, cy), (x2, y1 + 1)], fill=_INK, width=2)
    draw.line([(x1 + 2, y2), (x2 - 2, y2)], fill=_INK, width=2)


def _drum(draw: ImageDraw.ImageDraw, box: Box) -> None:
    _x1, y1, _x2, y2 = box
    draw.rounded_rectangle(box, radius=max(2, (y2 - y1) // 2), outline=_INK, width=2)


#: class id -> (drawing function, width/height aspect ratio)
_SYMBOLS: dict[str, tuple[Callable[[ImageDraw.ImageDraw, Box], None], float]] = {
    "1": (_gate_valve, 1.6),
    "2": (_globe_valve, 1.6),
    "3": (_check_valve, 1.6),
    "4": (_ball_valve, 1.6),
    "5": (_field_instrument, 1.0),
    "6": (_panel_instrument, 1.0),
    "7": (_reducer, 1.2),
    "8": (_flange, 0.6),
    "9": (_pump, 1.0),
    "10": (_drum, 2.2),
}


@dataclass(frozen=True)
class SheetSpec:
    """Ranges a sheet is drawn from."""

    min_side: int = 480
    max_side: int = 1280
    min_symbols: int = 4
    max_symbols: int = 16
    min_symbol_px: int = 18
    max_symbol_px: int = 44
    #: The class ids drawn from (all of them by default): the demo's first batch lacks one, as a new
    #: symbol type arrives in a real deployment.
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Sheet:
    stem: str
    image: Image.Image
    rows: list[tuple[str, list[int], str]]


def overlaps(box: Box, placed: list[Box], margin: int) -> bool:
    """True when `box`, grown by `margin`, touches any placed box."""
    x1, y1, x2, y2 = box
    return any(x1 < b[2] + margin and b[0] - margin < x2 and y1 < b[3] + margin and b[1] - margin < y2 for b in placed)


def generate_sheet(seed: int, index: int, spec: SheetSpec = SheetSpec()) -> Sheet:
    """One sheet; the same (seed, index) always gives the same pixels and labels."""
    rng = np.random.default_rng([seed, index])
    width = int(rng.integers(spec.min_side, spec.max_side + 1))
    height = int(rng.integers(spec.min_side, spec.max_side + 1))
    image = Image.new("L", (width, height), _PAPER)
    draw = ImageDraw.Draw(image)
    pipes = _draw_pipes(draw, rng, width, height)
    rows: list[tuple[str, list[int], str]] = []
    placed: list[Box] = []
    class_ids = list(spec.classes or _SYMBOLS)
    wanted = int(rng.integers(spec.min_symbols, spec.max_symbols + 1))
    for _ in range(wanted * 8):
        if len(rows) == wanted:
            break
        class_id = class_ids[int(rng.integers(len(class_ids)))]
        drawer, aspect = _SYMBOLS[class_id]
        size = int(rng.integers(spec.min_symbol_px, spec.max_symbol_px + 1))
        w, h = max(6, int(size * aspect)), size
        horizontal, position = pipes[int(rng.integers(len(pipes)))]
        if horizontal:
            cx, cy = int(rng.integers(w, width - w)), position
        else:
            cx, cy = position, int(rng.integers(h, height - h))
            w, h = h, w
        box = (cx - w // 2, cy - h // 2, cx - w // 2 + w, cy - h // 2 + h)
        if box[0] < 1 or box[1] < 1 or box[2] > width - 1 or box[3] > height - 1 or overlaps(box, placed, 6):
            continue
        draw.rectangle(box, fill=_PAPER)
        symbol = Image.new("L", (box[2] - box[0], box[3] - box[1]) if horizontal else (h, w), _PAPER)
        drawer(ImageDraw.Draw(symbol), (0, 0, symbol.width - 1, symbol.height - 1))
        if not horizontal:
            symbol = symbol.transpose(Image.Transpose.ROTATE_90)
        image.paste(symbol, box[:2])
        placed.append(box)
        rows.append((LABEL_MAP[class_id].rsplit("/", 1)[-1], list(box), class_id))
    _draw_text_marks(draw, rng, width, height, placed)
    return Sheet(stem=f"sheet_{seed}_{index:05d}", image=image.convert("RGB"), rows=rows)


def _draw_pipes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> list[tuple[bool, int]]:
    pipes = []
    for _ in range(int(rng.integers(3, 7))):
        horizontal = bool(rng.integers(2))
        limit = height if horizontal else width
        position = int(rng.integers(40, limit - 40))
        start, end = sorted(int(v) for v in rng.integers(0, width if horizontal else height, size=2))
        start, end = min(start, 20), max(end, (width if horizontal else height) - 20)
        line = [(start, position), (end, position)] if horizontal else [(position, start), (position, end)]
        draw.line(line, fill=_INK, width=int(rng.integers(1, 3)))
        pipes.append((horizontal, position))
    return pipes


def _draw_text_marks(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int, placed: list[Box]
) -> None:
    """Short tag-like strokes near symbols: clutter a detector must learn to ignore."""
    for _ in range(int(rng.integers(4, 12))):
        x, y = int(rng.integers(0, width - 30)), int(rng.integers(0, height - 10))
        mark = (x, y, x + 24, y + 8)
        if overlaps(mark, placed, 4):
            continue
        for k in range(3):
            draw.line([(x + 8 * k, y), (x + 8 * k + 5, y + 8)], fill=_INK, width=1)


def label_rows_to_npy(rows: list[tuple[str, list[int], str]]) -> bytes:
    """The legacy object-row .npy layout, as the real sets ship it (a pickled object array)."""
    array = np.empty((len(rows), 3), dtype=object)
    for i, (name, box, class_id) in enumerate(rows):
        array[i, 0], array[i, 1], array[i, 2] = name, list(box), class_id
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_dataset_zip(path: Path, count: int, seed: int, spec: SheetSpec = SheetSpec(), start: int = 0) -> Path:
    """Write `count` sheets (indices start..start+count-1) to a zip in the shipped layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("label_map.json", json.dumps(LABEL_MAP, indent=2))
        for index in range(start, start + count):
            sheet = generate_sheet(seed, index, spec)
            archive.writestr(f"images/{sheet.stem}.jpg", encode_jpeg(sheet.image), compress_type=zipfile.ZIP_STORED)
            archive.writestr(f"labels/{sheet.stem}_symbols.npy", label_rows_to_npy(sheet.rows))
    return path


def write_mltable_set(
    folder: Path,
    count: int,
    seed: int,
    spec: SheetSpec = SheetSpec(),
    start: int = 0,
    generate: Callable[[int, int], Sheet] | None = None,
) -> Path:
    """Sheets as the data steps hand them to training: `images/`, `annotations.jsonl` (file:// URLs), MLTable.

    `generate` ((seed, index) -> Sheet) draws another kind of sheet, e.g. `devtools.realistic`'s.
    """
    from retrainer.images import image_size
    from retrainer.ingestion.labels import convert_label_file
    from shared.mltable_io import write_records

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(start, start + count):
        sheet = generate(seed, index) if generate else generate_sheet(seed, index, spec)
        jpeg = encode_jpeg(sheet.image)
        path = (images / f"{sheet.stem}.jpg").resolve()
        path.write_bytes(jpeg)
        width, height = image_size(jpeg) or (0, 0)
        records.append(
            convert_label_file(
                label_rows_to_npy(sheet.rows),
                file_name=sheet.stem,
                image_url=path.as_uri(),
                width=width,
                height=height,
                image_format="jpg",
            )
        )
    write_records(folder, records)
    return folder


def write_sample_artifacts(folder: Path, count: int = 24, seed: int = 2024) -> None:
    """The small set checked in under sample_artifacts/: a zip, and the same set unpacked with its JSONL."""
    from retrainer.images import image_size
    from retrainer.ingestion.labels import convert_label_file, record_to_jsonl

    spec = SheetSpec(min_side=320, max_side=480, min_symbols=4, max_symbols=10)
    write_dataset_zip(folder / "sample_set.zip", count, seed, spec)
    images, labels = folder / "data" / "images", folder / "data" / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    (folder / "data" / "label_map.json").write_text(json.dumps(LABEL_MAP, indent=2))
    for index in range(count):
        sheet = generate_sheet(seed, index, spec)
        jpeg, npy = encode_jpeg(sheet.image), label_rows_to_npy(sheet.rows)
        (images / f"{sheet.stem}.jpg").write_bytes(jpeg)
        (labels / f"{sheet.stem}_symbols.npy").write_bytes(npy)
        width, height = image_size(jpeg) or (0, 0)
        record = convert_label_file(
            npy, file_name=sheet.stem, image_url=f"{sheet.stem}.jpg", width=width, height=height, image_format="jpg"
        )
        (labels / f"{sheet.stem}.jsonl").write_bytes(record_to_jsonl(record))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50, help="number of sheets")
    parser.add_argument("--seed", type=int, default=0, help="seed; the same seed gives the same set")
    parser.add_argument("--start", type=int, default=0, help="index of the first sheet (for a second batch)")
    parser.add_argument(
        "--output", type=Path, required=True, help="zip file to write (a folder with --sample-artifacts)"
    )
    parser.add_argument("--sample-artifacts", action="store_true", help="write the checked-in sample set instead")
    args = parser.parse_args(argv)
    if args.sample_artifacts:
        write_sample_artifacts(args.output)
        print(f"wrote the sample artifacts to {args.output}")
        return
    write_dataset_zip(args.output, args.count, args.seed, start=args.start)
    print(f"wrote {args.count} sheets to {args.output}")


if __name__ == "__main__":
    main()
