"""The first model starts from the base model that ships with the detector, not from noise: every parameter but
the class rows, which start fresh; a base that cannot seed the model means noise, and the log says why."""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from devtools.base_model import SEEN_STYLE_SEED, TRAIN_SEED, UNSEEN_STYLE_SEED, build_parser, command, main
from pipeline_steps.detector.model import ARCHITECTURE, build_detector
from pipeline_steps.detector.warm_start import (
    BASE_FOLDER,
    BASE_RECORD,
    BASE_WEIGHTS,
    CLASS_ROWS,
    WarmStartUnavailable,
    base_start,
)

#: The realistic benchmark's data seeds (bench/train.py --realistic): the base must never have seen them.
BENCHMARK_SEEDS = {101, 202, 303, 404, 505}


@pytest.fixture
def base_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    shutil.copytree(BASE_FOLDER, folder)
    return folder


def test_the_base_model_seeds_everything_but_the_class_rows() -> None:
    torch.manual_seed(3)
    model = build_detector(5)
    fresh = {name: value.clone() for name, value in model.state_dict().items()}
    start = base_start(model)
    saved = torch.load(BASE_WEIGHTS, weights_only=True)
    state = model.state_dict()
    assert set(saved) == set(state) - set(CLASS_ROWS)
    for name, value in saved.items():
        assert torch.equal(state[name], value.to(state[name].dtype)), name
    for name in CLASS_ROWS:
        assert torch.equal(state[name], fresh[name]), f"{name}: every class row of a new deployment starts fresh"
    assert "every class row fresh" in start.describe() and "steps" in start.describe()


def test_the_shipped_base_model_is_small_and_its_record_says_how_it_was_made() -> None:
    assert BASE_WEIGHTS.stat().st_size < 5_000_000, "a few MB: it travels in the repository and in every MLflow model"
    record = json.loads(BASE_RECORD.read_text())
    assert record["architecture"] == ARCHITECTURE
    words = shlex.split(record["command"])
    assert words[:3] == ["python", "-m", "devtools.base_model"], "built by the detector's tool, not a benchmark"
    args = build_parser().parse_args(words[3:])
    assert command(args) == record["command"], "the record states the command as the tool does"
    assert (args.epochs, args.sheets, args.seed) == (record["epochs"], record["data"]["train"]["sheets"], 0)
    assert [args.min_side, args.max_side] == record["data"]["sides_px"]
    seeds = {record["data"][part]["seed"] for part in ("train", "seen_style_holdout", "unseen_style_holdout")}
    assert seeds == {TRAIN_SEED, SEEN_STYLE_SEED, UNSEEN_STYLE_SEED}
    assert not seeds & BENCHMARK_SEEDS, "the benchmark's sheets stay unseen"
    assert "style 3 never seen" in record["data"]["generator"]
    assert 0.0 <= record["figures"]["unseen_style_map50"] <= 1.0 and "ms per step" in record["pace"]


def test_a_base_model_of_another_architecture_is_refused_and_the_model_untouched(base_copy: Path) -> None:
    record = json.loads((base_copy / BASE_RECORD.name).read_text())
    (base_copy / BASE_RECORD.name).write_text(json.dumps({**record, "architecture": "fcos-symbol"}))
    model = build_detector(3)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(WarmStartUnavailable, match="architecture 'fcos-symbol'"):
        base_start(model, base_copy)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def _store_as_int8(weights: Path) -> None:
    """Every float parameter cast to int8 (a quantisation gone wrong): loads, and would train from rounded noise."""
    saved = torch.load(weights, weights_only=True)
    torch.save(
        {name: value.to(torch.int8) if value.is_floating_point() else value for name, value in saved.items()}, weights
    )


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda folder: (folder / BASE_WEIGHTS.name).write_bytes(b""), "not a whole torch checkpoint"),
        (lambda folder: (folder / BASE_WEIGHTS.name).unlink(), "is missing"),
        (lambda folder: (folder / BASE_RECORD.name).write_text("{"), "not readable"),
        (lambda folder: _store_as_int8(folder / BASE_WEIGHTS.name), "is stored as torch.int8"),
    ],
    ids=["empty weights", "no weights", "broken record", "float weights stored as int8"],
)
def test_a_damaged_base_model_is_refused_with_a_reason(
    base_copy: Path, damage: Callable[[Path], object], reason: str
) -> None:
    damage(base_copy)
    with pytest.raises(WarmStartUnavailable, match=reason):
        base_start(build_detector(3), base_copy)


def test_the_notes_say_the_start_and_the_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline_steps.detector.engine import TrainingResult
    from pipeline_steps.detector.warm_start import BaseStart
    from pipeline_steps.evaluation.metrics import evaluate

    history = [
        {"epoch": 1, "minutes": 0.5, "loss": 1.0, "steps": 100, "ms_per_step": 300.0, "load": 1.2},
        {"epoch": 2, "minutes": 1.0, "loss": 0.9, "steps": 100, "ms_per_step": 300.0, "load": 3.4},
    ]
    result = TrainingResult(
        torch.nn.Linear(1, 1), ["1"], evaluate([], [], ["1"]), [], 2, 2, 70.0, history, 2, training_seconds=60.0
    )
    assert result.notes()[0] == "trained from scratch"
    assert "pace: 300 ms per step over 200 steps" in result.pace() and "machine load 1.2-3.4" in result.pace()
    # A run pinned to one core of four: the machine's load of 3.4 is other cores' work, not this run's sharing.
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert "1 usable cores" in result.pace() and "other work shared the CPU" not in result.pace()
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert "other work shared the CPU" in result.pace()
    result.base = BaseStart(source="base", summary="30 epochs")
    assert result.notes()[0].startswith("started from the base model for P&ID symbols (30 epochs)")
    result.base, result.base_skipped = None, "the base model's record is not readable"
    assert result.notes()[0] == "trained from scratch: the base model's record is not readable"


@pytest.mark.slow
def test_the_tool_writes_a_base_that_seeds_a_model_and_a_record_that_rebuilds_it(tmp_path: Path) -> None:
    arguments = ["--epochs", "1", "--sheets", "2", "--val-sheets", "1", "--min-side", "800", "--max-side", "900"]
    assert main([*arguments, "--output", str(tmp_path)]) == 0
    record = json.loads((tmp_path / BASE_RECORD.name).read_text())
    assert record["command"] == command(build_parser().parse_args(arguments))
    assert record["architecture"] == ARCHITECTURE and record["epochs"] == 1
    saved = torch.load(tmp_path / BASE_WEIGHTS.name, weights_only=True)
    assert set(saved) == set(build_detector(3).state_dict()) - set(CLASS_ROWS), "every parameter but the class rows"
