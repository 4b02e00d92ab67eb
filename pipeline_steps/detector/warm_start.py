"""Start training from the champion's weights: the retraining service builds on the model in use.

The backbone and the box head carry over as they are. The class head has one row per class: a class
the champion knew keeps its row, a class it never saw gets the fresh row of a new model, and a class
that is gone is dropped. A champion saved by another detector architecture cannot be used (the
weights would not fit), and the caller trains from scratch and says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline_steps.detector.model import ARCHITECTURE

#: The parameters with one row per class (row 0 is torchvision's unused background index).
CLASS_ROWS = ("head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias")
WEIGHTS_FILE = Path("artifacts") / "weights.pt"
CONFIG_FILE = Path("artifacts") / "config.json"


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


def warm_start(model: torch.nn.Module, champion_folder: Path, classes: list[str]) -> WarmStart:
    """Load the champion (an MLflow model folder of this detector) into `model`, built for `classes`."""
    config_path, weights_path = champion_folder / CONFIG_FILE, champion_folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise WarmStartUnavailable(f"{champion_folder} is not a model of the local detector (no {CONFIG_FILE})")
    config = json.loads(config_path.read_text())
    if config.get("architecture") != ARCHITECTURE:
        raise WarmStartUnavailable(
            f"the champion was saved by detector architecture {config.get('architecture')!r}, this code builds "
            f"{ARCHITECTURE!r}"
        )
    old_classes = [str(c) for c in config["classes"]]
    saved = torch.load(weights_path, weights_only=True)
    state = model.state_dict()
    for name, value in saved.items():
        if name in CLASS_ROWS or name not in state:
            continue
        if state[name].shape != value.shape:
            raise WarmStartUnavailable(
                f"{name} has shape {tuple(value.shape)}, the model wants {tuple(state[name].shape)}"
            )
        state[name] = value
    old_row = {c: i + 1 for i, c in enumerate(old_classes)}
    for name in CLASS_ROWS:
        for new_index, c in enumerate(classes, start=1):
            if c in old_row:
                state[name][new_index] = saved[name][old_row[c]]
        state[name][0] = saved[name][0]
    model.load_state_dict(state)
    return WarmStart(
        source=str(champion_folder),
        kept=[c for c in classes if c in old_row],
        added=[c for c in classes if c not in old_row],
        dropped=[c for c in old_classes if c not in set(classes)],
    )
