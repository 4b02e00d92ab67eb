"""Start training from the champion's weights: the retraining service builds on the model in use.

The backbone and the box head carry over as they are. The class head has one row per class: a class
the champion knew keeps its row, a class it never saw gets the fresh row of a new model, and a class
that is gone is dropped. A champion that cannot seed the model (not a model of this detector, saved by
another detector architecture, or damaged) raises `WarmStartUnavailable` with a one-line reason naming
the file, and the caller trains from scratch and says why.

The champion is read here and nowhere else, so every check of its files lives here, before the model
is touched: a damaged champion must cost one warm start, never every later run (a run that crashes
on it records no model, so the champion stays and the next run reads the same files).

With no champion, the model starts from the base model that ships with this package (`base/`): the
same detector trained once on P&ID symbols (`python -m devtools.base_model`, its record in
`base/base.json`), saved without class rows, so every class of a new deployment starts fresh. The
base is checked like a champion; one that cannot seed the model means training from scratch.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline_steps.detector.model import ARCHITECTURE

#: The parameters with one row per class (row 0 is torchvision's unused background index).
CLASS_ROWS = ("head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias")
WEIGHTS_FILE = Path("artifacts") / "weights.pt"
CONFIG_FILE = Path("artifacts") / "config.json"
#: The base model: its weights (float16, class rows left out) and its record (architecture, how it was made).
BASE_FOLDER = Path(__file__).resolve().parent / "base"
BASE_WEIGHTS = BASE_FOLDER / "weights.pt"
BASE_RECORD = BASE_FOLDER / "base.json"


class WarmStartUnavailable(ValueError):
    """The champion's weights cannot seed this model (the message says why)."""


@dataclass(frozen=True)
class WarmStart:
    """Where the weights came from and what happened to each class."""

    source: str
    kept: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"warm start from the champion's weights: {len(self.kept)} classes kept"]
        if self.added:
            parts.append(f"new classes {', '.join(self.added)} start fresh")
        if self.dropped:
            parts.append(f"classes {', '.join(self.dropped)} are gone and were dropped")
        return "; ".join(parts)


@dataclass(frozen=True)
class BaseStart:
    """The model started from the base model: every parameter but the class rows, which start fresh."""

    source: str
    summary: str  # how the base was made, from its record

    def describe(self) -> str:
        return f"started from the base model for P&ID symbols ({self.summary}); every class row fresh"


def base_start(model: torch.nn.Module, folder: Path = BASE_FOLDER) -> BaseStart:
    """Load the base model into `model`, all but its class rows. Raises `WarmStartUnavailable` before
    changing `model` when the base cannot seed it (missing, damaged, or of another architecture)."""
    record_path = folder / BASE_RECORD.name
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise WarmStartUnavailable(
            f"the base model's record {record_path} is not readable ({_one_line(error)})"
        ) from error
    if not isinstance(record, dict) or record.get("architecture") != ARCHITECTURE:
        found = record.get("architecture") if isinstance(record, dict) else record
        raise WarmStartUnavailable(
            f"the base model {record_path} was made for detector architecture {found!r}, this code builds "
            f"{ARCHITECTURE!r}"
        )
    state = model.state_dict()
    saved = _read_weights(folder / BASE_WEIGHTS.name, state, champion_classes=None)
    for name, value in saved.items():
        state[name] = value.to(state[name].dtype)
    model.load_state_dict(state)
    summary = str(record.get("summary", "no summary recorded"))
    return BaseStart(source=str(folder), summary=summary)


def save_base(model: torch.nn.Module, record: dict, folder: Path = BASE_FOLDER) -> None:
    """Write `model` as the base model: float16 (half the size; training runs in float32 or bfloat16 anyway),
    without its class rows, and `record` (how it was made) beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        name: value.half() if value.is_floating_point() else value
        for name, value in model.state_dict().items()
        if name not in CLASS_ROWS
    }
    torch.save(state, folder / BASE_WEIGHTS.name)
    (folder / BASE_RECORD.name).write_text(json.dumps({**record, "architecture": ARCHITECTURE}, indent=2) + "\n")


def warm_start(model: torch.nn.Module, champion_folder: Path, classes: list[str]) -> WarmStart:
    """Load the champion (an MLflow model folder of this detector) into `model`, built for `classes`.

    Raises `WarmStartUnavailable` before changing `model` when the champion cannot seed it.
    """
    old_classes = _read_classes(champion_folder)
    state = model.state_dict()
    saved = _read_weights(champion_folder / WEIGHTS_FILE, state, len(old_classes))
    old_row = {c: i + 1 for i, c in enumerate(old_classes)}
    for name, value in saved.items():
        if name not in CLASS_ROWS:
            state[name] = value
    for name in CLASS_ROWS:
        rows = state[name].clone()  # the fresh rows of new classes; the model changes only on load
        rows[0] = saved[name][0]
        for new_index, c in enumerate(classes, start=1):
            if c in old_row:
                rows[new_index] = saved[name][old_row[c]]
        state[name] = rows
    model.load_state_dict(state)
    return WarmStart(
        source=str(champion_folder),
        kept=[c for c in classes if c in old_row],
        added=[c for c in classes if c not in old_row],
        dropped=[c for c in old_classes if c not in set(classes)],
    )


def _read_classes(champion_folder: Path) -> list[str]:
    """The champion's classes, in the order of its class rows, from a config of this architecture."""
    config_path = champion_folder / CONFIG_FILE
    if not config_path.is_file():
        raise WarmStartUnavailable(f"{champion_folder} is not a model of the local detector: {config_path} is missing")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise WarmStartUnavailable(f"{config_path} is not readable JSON ({_one_line(error)})") from error
    if not isinstance(config, dict):
        raise WarmStartUnavailable(f"{config_path} holds a JSON {type(config).__name__}, not an object")
    if "architecture" not in config:
        raise WarmStartUnavailable(f"{config_path} names no detector architecture; this code builds {ARCHITECTURE!r}")
    if config["architecture"] != ARCHITECTURE:
        raise WarmStartUnavailable(
            f"the champion was saved by detector architecture {config['architecture']!r}, this code builds "
            f"{ARCHITECTURE!r} ({config_path})"
        )
    if "classes" not in config:
        raise WarmStartUnavailable(f"{config_path} names no classes")
    classes = config["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise WarmStartUnavailable(f"{config_path}: 'classes' is {_shown(classes)}, not a list of class ids (text)")
    if len(set(classes)) != len(classes):
        twice = sorted({c for c in classes if classes.count(c) > 1})
        raise WarmStartUnavailable(f"{config_path} lists classes {', '.join(twice)} more than once")
    return classes


def _read_weights(
    weights_path: Path, state: dict[str, torch.Tensor], champion_classes: int | None
) -> dict[str, torch.Tensor]:
    """The champion's parameters, each checked to fit `state` (the class rows: `champion_classes` + 1 rows;
    None: a base model, which has no class rows)."""
    saved = _load_tensors(weights_path)
    expected = set(state) - set(CLASS_ROWS) if champion_classes is None else set(state)
    missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
    if missing:
        raise WarmStartUnavailable(
            f"{weights_path} lacks {len(missing)} of the model's {len(state)} parameters (first: {missing[0]})"
        )
    if unexpected:  # the same architecture saves the same names, so a stranger means the file is not ours
        raise WarmStartUnavailable(
            f"{weights_path} holds parameters this model does not have ({len(unexpected)}, first: {unexpected[0]})"
        )
    for name, value in saved.items():
        wanted = tuple(state[name].shape)
        if champion_classes is not None and name in CLASS_ROWS:
            wanted = (champion_classes + 1, *wanted[1:])
        if tuple(value.shape) != wanted:
            raise WarmStartUnavailable(_shape_mismatch(weights_path, name, tuple(value.shape), wanted))
        # Loading casts silently: a float parameter stored as integers (a quantisation gone wrong) would seed
        # training with rounded noise, and a counter stored as floats is not this detector's either.
        if value.is_floating_point() != state[name].is_floating_point():
            raise WarmStartUnavailable(
                f"{weights_path}: {name} is stored as {value.dtype}, the model wants {state[name].dtype}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WarmStartUnavailable(f"{weights_path}: {name} holds NaN or infinite values")
    return saved


def _load_tensors(weights_path: Path) -> dict[str, torch.Tensor]:
    """A dict of named tensors from `weights_path`, refused whole when the file is damaged.

    torch.save writes a zip whose members carry CRC-32 checksums that torch.load never verifies: a
    flipped byte inside a tensor loads silently. Checking them here turns such a file into a refusal.
    """
    if not weights_path.is_file():
        raise WarmStartUnavailable(f"{weights_path} is missing")
    if not zipfile.is_zipfile(weights_path):
        raise WarmStartUnavailable(f"{weights_path} is not a whole torch checkpoint (empty, truncated or not torch's)")
    try:
        with zipfile.ZipFile(weights_path) as archive:
            corrupt = archive.testzip()
        if corrupt is not None:
            raise WarmStartUnavailable(f"{weights_path} is damaged: its member {corrupt} fails its checksum")
        saved = torch.load(weights_path, map_location="cpu", weights_only=True)  # a GPU-saved one too
    except WarmStartUnavailable:
        raise
    except pickle.UnpicklingError as error:
        # weights_only refuses a pickle that names anything beyond tensors and containers: it could run code.
        raise WarmStartUnavailable(
            f"{weights_path} holds more than tensors; torch.load(weights_only=True) refused it, as loading it "
            "could run code"
        ) from error
    # A damaged file fails zipfile and torch.load in many ways, not a documented set (measured on cut and
    # flipped files: BadZipFile, NotImplementedError, UnicodeDecodeError, RuntimeError; on a bare pickle
    # stream also EOFError, KeyError, AssertionError, IndexError, TypeError). At this edge each is a
    # reason, recorded with its type and message, never the crash of every later run.
    except Exception as error:
        raise WarmStartUnavailable(f"{weights_path} cannot be read ({_one_line(error)})") from error
    if not isinstance(saved, dict):
        raise WarmStartUnavailable(f"{weights_path} holds {_shown(saved)}, not a dict of named tensors")
    strangers = [name for name, value in saved.items() if not isinstance(name, str) or not torch.is_tensor(value)]
    if strangers:
        raise WarmStartUnavailable(
            f"{weights_path} holds entries that are not named tensors ({len(strangers)}, first: {strangers[0]!r})"
        )
    return saved


def _shape_mismatch(weights_path: Path, name: str, shape: tuple[int, ...], wanted: tuple[int, ...]) -> str:
    if name in CLASS_ROWS and shape[1:] == wanted[1:]:
        return (
            f"{weights_path} holds class rows for {shape[0] - 1} classes, but {CONFIG_FILE.name} names {wanted[0] - 1}"
        )
    return f"{weights_path}: {name} has shape {shape}, the model wants {wanted}"


def _shown(value: object) -> str:
    """A value's type, and the value itself when short: enough to recognise it in a one-line reason."""
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)}"
    text = " ".join(repr(value).split())  # a one-line reason: a tensor inside a list prints on many lines
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:40] + '...'}"


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else 'no message'}"
