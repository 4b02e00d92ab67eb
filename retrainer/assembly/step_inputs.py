"""The steps' settings as both runners pass them (the Azure ML pipeline and the local runner alike).

Keys are the component inputs of `shared/components/<step>.yml` (the step CLIs take the same names as
flags), declared with each step in `graph.STEPS`, so a setting reaches a step the same way on both
backends, and nowhere else. Data inputs and outputs (folders) are wired by each runner.
"""

from __future__ import annotations

from collections.abc import Mapping

from retrainer.assembly.graph import STEPS, SettingValue
from retrainer.settings import Settings

StepSettings = dict[str, dict[str, SettingValue]]


def step_settings(settings: Settings) -> StepSettings:
    """Every setting each step of the graph takes, by component input name; None leaves an optional input unset."""
    return {step.name: dict(step.settings(settings)) for step in STEPS}


def as_flags(inputs: Mapping[str, object]) -> list[str]:
    """`--name value` pairs for a step CLI; unset optional inputs are left out, booleans as true/false."""
    flags: list[str] = []
    for name, value in inputs.items():
        if value is None:
            continue
        flags += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags
