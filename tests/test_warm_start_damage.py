"""A damaged champion costs one warm start, never every later run: each damage to its weights or config is
refused where the champion is read, with a reason naming the file, and training goes on from scratch."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pipeline_steps.detector.model import ARCHITECTURE, build_detector
from pipeline_steps.detector.warm_start import (
    CLASS_ROWS,
    CONFIG_FILE,
    WEIGHTS_FILE,
    WarmStartUnavailable,
    warm_start,
)

CHAMPION_CLASSES = ["1", "2", "3"]


@pytest.fixture
def champion(tmp_path: Path) -> Path:
    """The artefacts of a champion of this detector, as `save_detector` lays them out (no MLflow: fast)."""
    folder = tmp_path / "champion"
    (folder / WEIGHTS_FILE).parent.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(build_detector(len(CHAMPION_CLASSES)).state_dict(), folder / WEIGHTS_FILE)
    _write_config(folder, {"classes": CHAMPION_CLASSES, "score_threshold": 0.05, "architecture": ARCHITECTURE})
    return folder


def _write_config(folder: Path, config: object) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    _write_config(folder, {**config, **changes})


def _drop_from_config(folder: Path, key: str) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    del config[key]
    _write_config(folder, config)


def _edit_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    saved = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    torch.save(edit(saved), folder / WEIGHTS_FILE)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte_of_a_tensor(path: Path) -> None:
    """Bit rot inside one tensor: torch.load reads it without complaint, only the zip's CRC-32 knows."""
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda info: info.file_size)
        offset = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    data = bytearray(path.read_bytes())
    data[offset + member.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


class _RunsCode:
    """What a pickle carries to run code on load: here, making a folder the test then looks for."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def _without(saved: dict[str, torch.Tensor], *names: str) -> dict[str, torch.Tensor]:
    return {name: value for name, value in saved.items() if name not in names}


def _with_nan(saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    name = next(name for name in saved if name.startswith("backbone.") and saved[name].is_floating_point())
    saved[name].view(-1)[0] = float("nan")
    return saved


#: Each damage: what it does to a champion folder, and words its reason must hold besides the file's name.
DAMAGES: dict[str, tuple[Callable[[Path], object], str, Path]] = {
    "truncated weights": (lambda f: _truncate(f / WEIGHTS_FILE), "not a whole torch checkpoint", WEIGHTS_FILE),
    "empty weights": (lambda f: (f / WEIGHTS_FILE).write_bytes(b""), "not a whole torch checkpoint", WEIGHTS_FILE),
    "weights that are not torch's": (
        lambda f: (f / WEIGHTS_FILE).write_text("{}"),
        "not a whole torch checkpoint",
        WEIGHTS_FILE,
    ),
    "a flipped byte in a tensor": (lambda f: _flip_a_byte_of_a_tensor(f / WEIGHTS_FILE), "checksum", WEIGHTS_FILE),
    "a bare tensor": (
        lambda f: torch.save(torch.zeros(3, 3), f / WEIGHTS_FILE),
        "holds a tensor of shape (3, 3)",
        WEIGHTS_FILE,
    ),
    "a list of tensors": (lambda f: _edit_weights(f, lambda s: list(s.values())), "holds list [", WEIGHTS_FILE),
    "an entry that is not a tensor": (
        lambda f: _edit_weights(f, lambda s: {**s, "note": "text"}),
        "not named tensors",
        WEIGHTS_FILE,
    ),
    "class rows missing": (lambda f: _edit_weights(f, lambda s: _without(s, *CLASS_ROWS)), "lacks 2", WEIGHTS_FILE),
    "a parameter of another model": (
        lambda f: _edit_weights(f, lambda s: {**s, "backbone.extra.weight": torch.zeros(1)}),
        "does not have",
        WEIGHTS_FILE,
    ),
    "a parameter of the wrong shape": (
        lambda f: _edit_weights(f, lambda s: {**s, "backbone.smooth.bias": torch.zeros(5)}),
        "has shape (5,), the model wants (64,)",
        WEIGHTS_FILE,
    ),
    "NaN weights": (lambda f: _edit_weights(f, _with_nan), "NaN", WEIGHTS_FILE),
    "a float parameter stored as int8": (
        lambda f: _edit_weights(
            f, lambda s: {**s, "backbone.smooth.weight": s["backbone.smooth.weight"].to(torch.int8)}
        ),
        "backbone.smooth.weight is stored as torch.int8, the model wants torch.float32",
        WEIGHTS_FILE,
    ),
    "a float parameter stored as booleans": (
        lambda f: _edit_weights(f, lambda s: {**s, "backbone.smooth.bias": s["backbone.smooth.bias"] > 0}),
        "is stored as torch.bool",
        WEIGHTS_FILE,
    ),
    "missing weights": (lambda f: (f / WEIGHTS_FILE).unlink(), "missing", WEIGHTS_FILE),
    "missing config": (lambda f: (f / CONFIG_FILE).unlink(), "not a model of the local detector", CONFIG_FILE),
    "a config that is a list": (lambda f: _write_config(f, CHAMPION_CLASSES), "a JSON list", CONFIG_FILE),
    "half-written config": (
        lambda f: (f / CONFIG_FILE).write_text('{"classes": ["1", "2"'),
        "not readable JSON",
        CONFIG_FILE,
    ),
    "a config that is not text": (lambda f: (f / CONFIG_FILE).write_bytes(b"\xff\xfe{"), "not readable", CONFIG_FILE),
    "classes that are a number": (lambda f: _edit_config(f, classes=3), "'classes' is int 3", CONFIG_FILE),
    "classes missing": (lambda f: _drop_from_config(f, "classes"), "names no classes", CONFIG_FILE),
    "a class named twice": (lambda f: _edit_config(f, classes=["1", "2", "2"]), "more than once", CONFIG_FILE),
    "six classes over weights holding three": (
        lambda f: _edit_config(f, classes=[str(c) for c in range(1, 7)]),
        "class rows for 3 classes, but config.json names 6",
        WEIGHTS_FILE,
    ),
    "another architecture": (
        lambda f: _edit_config(f, architecture="fcos-symbol"),
        "architecture 'fcos-symbol'",
        CONFIG_FILE,
    ),
    "no architecture": (lambda f: _drop_from_config(f, "architecture"), "names no detector architecture", CONFIG_FILE),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_champion_is_refused_with_a_one_line_reason_naming_the_file_and_the_model_is_untouched(
    champion: Path, damage: str
) -> None:
    do_damage, words, damaged_file = DAMAGES[damage]
    do_damage(champion)
    torch.manual_seed(0)
    model = build_detector(4)
    fresh = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(WarmStartUnavailable) as refused:
        warm_start(model, champion, ["1", "2", "4", "5"])
    reason = str(refused.value)
    assert str(champion / damaged_file) in reason and words in reason, reason
    assert "\n" not in reason
    assert all(torch.equal(value, fresh[name]) for name, value in model.state_dict().items()), "the model changed"


def test_an_undamaged_champion_of_the_same_layout_seeds_the_model(champion: Path) -> None:
    """The control: the fixture's champion is whole, so each refusal above is the damage's doing."""
    seeded = warm_start(build_detector(4), champion, ["1", "2", "4", "5"])
    assert (seeded.kept, seeded.added, seeded.dropped) == (["1", "2"], ["4", "5"], ["3"])


def test_a_pickle_that_would_run_code_is_refused_unrun_with_a_reason(champion: Path, tmp_path: Path) -> None:
    marker = tmp_path / "the pickle ran"
    torch.save({"backbone.smooth.bias": _RunsCode(marker)}, champion / WEIGHTS_FILE)
    with pytest.raises(WarmStartUnavailable, match="refused it, as loading it could run code") as refused:
        warm_start(build_detector(3), champion, CHAMPION_CLASSES)
    assert str(champion / WEIGHTS_FILE) in str(refused.value) and not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated weights", "a config that is a list"])
def test_training_from_a_damaged_champion_goes_on_from_scratch_and_says_why(
    champion: Path, damage: str, training_sets: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline_steps import train as train_step

    do_damage, words, _ = DAMAGES[damage]
    do_damage(champion)
    output = tmp_path / "model"
    args = ["--train-data", str(training_sets[0]), "--val-data", str(training_sets[1]), "--output", str(output)]
    code = train_step.main([*args, "--epochs", "1", "--warm-epochs", "1", "--warm-start-model", str(champion)])
    assert code == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["warm_start"] is None and words in metrics["warm_start_skipped"]
    said = f"trained from scratch: {metrics['warm_start_skipped']}"
    assert said in capsys.readouterr().out
    report = (output / metrics["report"]).read_text()
    assert words in report and "trained from scratch" in report
