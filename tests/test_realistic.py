"""The realistic generator: 24 classes in several styles, valid labels, deterministic, the sizes asked for."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from devtools.realistic import LABEL_MAP, REALISTIC_SPEC, STYLE_TABLE, generate_sheet, sheet_generator
from devtools.synthetic import write_mltable_set
from shared.evaluation.sheets import load_sheets

SMALL = dataclasses.replace(REALISTIC_SPEC, min_side=1400, max_side=1600)


def test_the_same_seed_index_and_styles_give_the_same_sheet() -> None:
    first, again = generate_sheet(5, 3, (0, 1), SMALL), generate_sheet(5, 3, (0, 1), SMALL)
    assert first.rows == again.rows and np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert generate_sheet(5, 3, (2,), SMALL).rows != first.rows


def test_sheets_hold_20_to_60_symbols_of_24_classes_within_the_sheet() -> None:
    seen: set[str] = set()
    for index in range(12):
        sheet = generate_sheet(1, index, (0, 1, 2, 3), SMALL)
        width, height = sheet.image.size
        assert 1400 <= width <= 1600 and 20 <= len(sheet.rows) <= 60
        for _, (x1, y1, x2, y2), class_id in sheet.rows:
            assert 0 < x1 < x2 < width and 0 < y1 < y2 < height
            assert 18 <= max(x2 - x1, y2 - y1) <= 2.6 * 100
            seen.add(class_id)
    assert seen == set(LABEL_MAP) and len(LABEL_MAP) == 24 and len(STYLE_TABLE) >= 4


def test_every_class_looks_different_in_each_style() -> None:
    from devtools.realistic import render_symbol

    for class_id in LABEL_MAP:
        drawings = [np.asarray(render_symbol(class_id, 40, style)) for style in STYLE_TABLE.values()]
        for i, a in enumerate(drawings):
            for b in drawings[i + 1 :]:
                assert a.shape != b.shape or not np.array_equal(a, b), class_id


def test_a_realistic_set_loads_as_training_data(tmp_path: Path) -> None:
    folder = write_mltable_set(tmp_path / "set", 3, seed=2, generate=sheet_generator((3,), SMALL))
    sheets = load_sheets(folder)
    assert len(sheets) == 3 and all(len(sheet.labels) >= 20 for sheet in sheets)


def test_actuator_letters_scale_with_the_symbol_like_a_cad_block() -> None:
    """Motor-operated (M) and solenoid (S) valves differ only by their letter, which must grow with the symbol."""
    from devtools.realistic import render_symbol

    def letter_difference(size: int) -> int:
        motor, solenoid = (np.asarray(render_symbol(c, size, STYLE_TABLE[0])) < 128 for c in ("10", "11"))
        return int((motor != solenoid).sum())

    small, large = letter_difference(40), letter_difference(100)
    assert small > 0 and large >= 4 * small, (small, large)
