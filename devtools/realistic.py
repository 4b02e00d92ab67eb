"""Realistic synthetic P&ID sheets: 24 classes in look-alike families, several drawing styles each.

Closer to real drawings than `devtools.synthetic`: valves that differ by one stroke, actuated valves,
instrument bubbles that differ by a line or a frame, fittings and equipment; each class drawn in one
of four styles (line weight, proportions, fill, small details) so a detector can be trained on some
styles and measured on one it never saw; symbols sit on pipes that break at the symbol, most carry a
tag beside them, free notes and line numbers fill the sheet; quarter turns and flips; blur, JPEG and
scan noise. Sheets run from `min_side` to `max_side` px (1,400-7,000 by default). Deterministic by
(seed, index, styles).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from devtools.synthetic import Box, Sheet, SheetSpec, overlaps

LABEL_MAP: dict[str, str] = {
    "1": "Instrument/Valve/Gate valve",
    "2": "Instrument/Valve/Globe valve",
    "3": "Instrument/Valve/Check valve",
    "4": "Instrument/Valve/Ball valve",
    "5": "Instrument/Valve/Butterfly valve",
    "6": "Instrument/Valve/Needle valve",
    "7": "Instrument/Valve/Plug valve",
    "8": "Instrument/Valve/Three-way valve",
    "9": "Instrument/Actuated valve/Pneumatic valve",
    "10": "Instrument/Actuated valve/Motor-operated valve",
    "11": "Instrument/Actuated valve/Solenoid valve",
    "12": "Instrument/Indicator/Field instrument",
    "13": "Instrument/Indicator/Panel instrument",
    "14": "Instrument/Indicator/DCS function",
    "15": "Instrument/Indicator/PLC function",
    "16": "Instrument/Indicator/Auxiliary panel instrument",
    "17": "Piping/Fitting/Concentric reducer",
    "18": "Piping/Fitting/Eccentric reducer",
    "19": "Piping/Fitting/Flange",
    "20": "Piping/Fitting/Blind flange",
    "21": "Piping/Fitting/Spectacle blind",
    "22": "Piping/Fitting/Y-strainer",
    "23": "Equipment/Pump/Centrifugal pump",
    "24": "Equipment/Vessel/Drum",
}
STYLES = (0, 1, 2, 3)

INK, PAPER = 0, 255


@dataclass(frozen=True)
class Style:
    """How a drafting standard draws: line weight, proportions, fills and small details."""

    line: int
    aspect: float  # width / height of valve bodies
    solid: bool  # solid or hollow marks (dots, plugs, blinds)
    round_caps: bool  # rounded or square frames and actuator boxes
    detail: float  # relative size of inner details
    stretch: float  # proportions of the other symbols (bubbles, fittings, equipment)


STYLE_TABLE = {
    0: Style(line=2, aspect=1.8, solid=True, round_caps=False, detail=0.18, stretch=1.0),
    1: Style(line=1, aspect=2.2, solid=True, round_caps=True, detail=0.14, stretch=1.12),
    2: Style(line=3, aspect=1.6, solid=False, round_caps=False, detail=0.22, stretch=0.9),
    3: Style(line=2, aspect=2.0, solid=False, round_caps=True, detail=0.16, stretch=1.06),
}


def _bowtie(d: ImageDraw.ImageDraw, w: int, h: int, s: Style, top: int = 0) -> tuple[int, int]:
    cx, cy = w // 2, top + (h - top) // 2
    d.polygon([(0, top), (cx, cy), (0, h - 1)], outline=INK, width=s.line)
    d.polygon([(w - 1, top), (cx, cy), (w - 1, h - 1)], outline=INK, width=s.line)
    return cx, cy


def _dot(d: ImageDraw.ImageDraw, cx: int, cy: int, r: int, s: Style, solid: bool | None = None) -> None:
    fill = INK if (s.solid if solid is None else solid) else PAPER
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=INK, width=s.line)


def _actuated(d: ImageDraw.ImageDraw, w: int, h: int, s: Style, head: str) -> None:
    body_top = h // 2
    cx, cy = _bowtie(d, w, h, s, top=body_top)
    box_height = max(6, h // 3)
    d.line([(cx, cy), (cx, box_height)], fill=INK, width=s.line)
    side = max(4, int(box_height * 0.75))
    box = [cx - side, 0, cx + side, box_height]
    if head == "dome":
        d.pieslice([cx - side, 0, cx + side, 2 * box_height], 180, 360, outline=INK, width=s.line)
    else:
        if s.round_caps:
            d.rounded_rectangle(box, radius=max(1, box_height // 4), outline=INK, width=s.line)
        else:
            d.rectangle(box, outline=INK, width=s.line)
        # The letter is part of the CAD block, so it scales with the symbol (a fixed-size bitmap
        # font overflowed the box of a small symbol and vanished in a large one).
        font = _letter_font(max(4, int((box_height - 2 * s.line) * 0.9)))
        d.text((cx, box_height / 2 + 0.5), head, fill=INK, font=font, anchor="mm")


@functools.cache
def _letter_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _bubble(d: ImageDraw.ImageDraw, w: int, h: int, s: Style, frame: str = "", bar: str = "") -> None:
    if frame:
        if frame == "square":
            d.rectangle([0, 0, w - 1, h - 1], outline=INK, width=s.line)
        else:
            d.rectangle([0, 0, w - 1, h - 1], outline=INK, width=s.line)
            d.polygon([(w // 2, 0), (w - 1, h // 2), (w // 2, h - 1), (0, h // 2)], outline=INK, width=s.line)
            return
    d.ellipse([0, 0, w - 1, h - 1], outline=INK, width=s.line)
    if bar == "solid":
        d.line([(0, h // 2), (w - 1, h // 2)], fill=INK, width=s.line)
    elif bar == "dashed":
        for x in range(0, w, 6):
            d.line([(x, h // 2), (min(x + 3, w - 1), h // 2)], fill=INK, width=s.line)


def _draw(class_id: str, d: ImageDraw.ImageDraw, w: int, h: int, s: Style) -> None:
    r = max(2, int(min(w, h) * s.detail))
    if class_id in ("1", "2", "3", "4", "5", "6", "7", "8"):
        cx, cy = _bowtie(d, w, h, s)
        if class_id == "2":
            _dot(d, cx, cy, r, s, solid=True)
        elif class_id == "3":
            d.line([(cx, 0), (cx, h - 1)], fill=INK, width=s.line)
        elif class_id == "4":
            _dot(d, cx, cy, int(r * 1.8), s, solid=False)
        elif class_id == "5":
            d.line([(cx, 0), (cx, h - 1)], fill=INK, width=s.line)
            _dot(d, cx, cy, r, s, solid=True)
        elif class_id == "6":
            d.line([(cx - r, 0), (cx + r, 0)], fill=INK, width=s.line + 1)
            d.line([(cx, 0), (cx, cy)], fill=INK, width=s.line)
        elif class_id == "7":
            d.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=INK)
        elif class_id == "8":
            d.polygon([(cx - h // 3, h - 1), (cx, cy), (cx + h // 3, h - 1)], outline=INK, width=s.line)
    elif class_id in ("9", "10", "11"):
        _actuated(d, w, h, s, {"9": "dome", "10": "M", "11": "S"}[class_id])
    elif class_id == "12":
        _bubble(d, w, h, s)
    elif class_id == "13":
        _bubble(d, w, h, s, bar="solid")
    elif class_id == "14":
        _bubble(d, w, h, s, frame="square")
        d.ellipse([0, 0, w - 1, h - 1], outline=INK, width=s.line)
    elif class_id == "15":
        _bubble(d, w, h, s, frame="diamond")
    elif class_id == "16":
        _bubble(d, w, h, s, bar="dashed")
    elif class_id == "17":
        d.polygon([(0, 0), (w - 1, h // 4), (w - 1, h - 1 - h // 4), (0, h - 1)], outline=INK, width=s.line)
    elif class_id == "18":
        d.polygon([(0, 0), (w - 1, h // 2), (w - 1, h - 1), (0, h - 1)], outline=INK, width=s.line)
    elif class_id == "19":
        d.line([(s.line, 0), (s.line, h - 1)], fill=INK, width=s.line + 1)
        d.line([(w - 1 - s.line, 0), (w - 1 - s.line, h - 1)], fill=INK, width=s.line + 1)
    elif class_id == "20":
        d.line([(s.line, 0), (s.line, h - 1)], fill=INK, width=s.line + 1)
        d.rectangle([w - 1 - max(3, w // 4), 0, w - 1, h - 1], fill=INK if s.solid else PAPER, outline=INK)
    elif class_id == "21":
        rr = min(w // 4, h // 2) - 1
        _dot(d, rr + 1, h // 2, rr, s, solid=False)
        _dot(d, w - rr - 2, h // 2, rr, s, solid=True)
        d.line([(2 * rr, h // 2), (w - 2 * rr - 2, h // 2)], fill=INK, width=s.line)
    elif class_id == "22":
        d.line([(0, h // 3), (w - 1, h // 3)], fill=INK, width=s.line)
        d.line([(w // 3, h // 3), (2 * w // 3, h - 1)], fill=INK, width=s.line)
        d.rectangle([2 * w // 3 - r, h - 1 - r, 2 * w // 3 + r, h - 1], outline=INK, width=s.line)
    elif class_id == "23":
        d.ellipse([0, 0, w - 1, h - 1], outline=INK, width=s.line)
        d.line([(w // 2, h // 2), (w - 1, 1)], fill=INK, width=s.line)
        d.polygon([(w // 4, h - 1), (w // 2, h * 3 // 4), (3 * w // 4, h - 1)], outline=INK, width=s.line)
    else:  # "24", drum
        radius = h // 2 if s.round_caps else max(2, h // 5)
        d.rounded_rectangle([0, 0, w - 1, h - 1], radius=radius, outline=INK, width=s.line)


#: class id -> width/height before the style's aspect (valves use the style's own aspect)
_SHAPES: dict[str, float] = {
    **{str(i): 0.0 for i in range(1, 9)},
    "9": 1.0,
    "10": 1.0,
    "11": 1.0,
    "12": 1.0,
    "13": 1.0,
    "14": 1.0,
    "15": 1.0,
    "16": 1.0,
    "17": 1.2,
    "18": 1.2,
    "19": 0.6,
    "20": 0.7,
    "21": 2.4,
    "22": 1.3,
    "23": 1.0,
    "24": 2.2,
}


def render_symbol(class_id: str, size: int, style: Style) -> Image.Image:
    """One symbol of `size` px height in a style, on its own paper."""
    aspect = style.aspect if not _SHAPES[class_id] else _SHAPES[class_id] * style.stretch
    w, h = max(8, int(size * aspect)), size
    symbol = Image.new("L", (w, h), PAPER)
    _draw(class_id, ImageDraw.Draw(symbol), w, h, style)
    return symbol


#: The synthetic generator's ranges at the size of real sheets.
REALISTIC_SPEC = SheetSpec(
    min_side=1400, max_side=7000, min_symbols=20, max_symbols=60, min_symbol_px=20, max_symbol_px=100
)


def _tag(rng: np.random.Generator, class_id: str) -> str:
    prefix = "FV" if int(class_id) <= 11 else "PIT" if int(class_id) <= 16 else "L"
    return f"{prefix}-{int(rng.integers(100, 9999))}"


def generate_sheet(seed: int, index: int, styles: Sequence[int] = STYLES, spec: SheetSpec = REALISTIC_SPEC) -> Sheet:
    """One realistic sheet whose symbols are drawn in the given styles only."""
    rng = np.random.default_rng([seed, index, *styles])
    width = int(rng.integers(spec.min_side, spec.max_side + 1))
    height = int(width * rng.uniform(0.6, 0.75))
    image = Image.new("L", (width, height), PAPER)
    draw = ImageDraw.Draw(image)
    pipes = []
    for _ in range(int(rng.integers(6, 14))):
        horizontal = bool(rng.integers(2))
        position = int(rng.integers(60, (height if horizontal else width) - 60))
        line = [(0, position), (width, position)] if horizontal else [(position, 0), (position, height)]
        draw.line(line, fill=INK, width=int(rng.integers(1, 4)))
        pipes.append((horizontal, position))
    rows: list[tuple[str, list[int], str]] = []
    placed: list[Box] = []
    wanted = int(rng.integers(spec.min_symbols, spec.max_symbols + 1))
    for _ in range(wanted * 10):
        if len(rows) == wanted:
            break
        class_id = str(int(rng.integers(1, 25)))
        style = STYLE_TABLE[int(styles[int(rng.integers(len(styles)))])]
        size = int(rng.integers(spec.min_symbol_px, spec.max_symbol_px + 1))
        symbol = render_symbol(class_id, size, style)
        if rng.random() < 0.5:
            symbol = symbol.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        horizontal, position = pipes[int(rng.integers(len(pipes)))]
        if not horizontal:
            symbol = symbol.transpose(Image.Transpose.ROTATE_90 if rng.random() < 0.5 else Image.Transpose.ROTATE_270)
        elif rng.random() < 0.3:
            symbol = symbol.transpose(Image.Transpose.ROTATE_180)
        sw, sh = symbol.size
        along = int(rng.integers(sw, (width if horizontal else height) - sw))
        cx, cy = (along, position) if horizontal else (position, along)
        box = (cx - sw // 2, cy - sh // 2, cx - sw // 2 + sw, cy - sh // 2 + sh)
        if box[0] < 2 or box[1] < 2 or box[2] > width - 2 or box[3] > height - 2 or overlaps(box, placed, 12):
            continue
        draw.rectangle(box, fill=PAPER)  # the pipe breaks at the symbol
        image.paste(symbol, box[:2])
        placed.append(box)
        rows.append((LABEL_MAP[class_id].rsplit("/", 1)[-1], list(box), class_id))
        if rng.random() < 0.8:
            tx, ty = box[2] + 4, box[1] - 14
            if ty > 0 and tx + 50 < width:
                draw.text((tx, ty), _tag(rng, class_id), fill=INK)
    _notes(draw, rng, width, height, placed)
    return Sheet(stem=f"pid_{seed}_{''.join(map(str, styles))}_{index:05d}", image=_degrade(image, rng), rows=rows)


def _notes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int, placed: list[Box]) -> None:
    """Free notes and line numbers: text a detector must learn to ignore."""
    for _ in range(int(rng.integers(8, 8 + width // 300))):
        x, y = int(rng.integers(0, width - 200)), int(rng.integers(0, height - 20))
        if overlaps((x, y, x + 160, y + 12), placed, 6):
            continue
        text = (
            f'{int(rng.integers(1, 24))}"-P-{int(rng.integers(1000, 9999))}-A1'
            if rng.random() < 0.5
            else f"NOTE {int(rng.integers(1, 20))}: SEE DWG {int(rng.integers(100, 999))}"
        )
        draw.text((x, y), text, fill=INK)


def _degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Scanner and JPEG artefacts: a slight blur, grey paper with speckle."""
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))
    pixels = np.asarray(image, dtype=np.int16)
    speckle = rng.random(pixels.shape) < 0.0015
    pixels = np.where(speckle, rng.integers(0, 256, size=pixels.shape), pixels)
    pixels = np.clip(pixels - int(rng.integers(0, 18)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "L").convert("RGB")


def sheet_generator(styles: Sequence[int], spec: SheetSpec = REALISTIC_SPEC) -> Callable[[int, int], Sheet]:
    """`(seed, index) -> Sheet` in the given styles, for `devtools.synthetic.write_mltable_set(generate=...)`."""
    return lambda seed, index: generate_sheet(seed, index, styles, spec)
