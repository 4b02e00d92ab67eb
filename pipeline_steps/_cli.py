"""Shared argument handling of the step CLIs.

Every flag answers to its `--kebab-case` and `--snake_case` spelling: the steps' users already call
them both ways (the original pipeline mixed the two). Settings reach a step only as flags (component
inputs), never from the environment: `retrainer/assembly/step_inputs.py` maps settings to them for both
runners. A flag added without a default takes its component's (`shared/components/<step>.yml`), so each
input has one default, which a test holds equal to the setting's. A flag that carries a setting (`setting=`)
takes its range from the setting's field (`shared.settings.setting_bound`): one bound, which the
service checks at start and the step's CLI checks again, with one wording; where no component declares
the input (the local trainer has none), its default is the setting field's too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from shared import COMPONENTS

_Number = TypeVar("_Number", int, float)


class StepParser(argparse.ArgumentParser):
    """A step's parser, holding its component's input defaults and the setting each bounded flag carries."""

    component_defaults: dict[str, Any]
    settings_of: dict[str, str]


def step_parser(step: str, description: str | None) -> StepParser:
    parser = StepParser(
        prog=f"python -m pipeline_steps.{step}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.component_defaults = component_defaults(step)
    parser.settings_of = {}
    return parser


def component_defaults(step: str) -> dict[str, Any]:
    """The defaults of a step's component inputs, by input name (none for the local trainer, which has no component)."""
    import yaml

    path = COMPONENTS / f"{step}.yml"
    if not path.is_file():
        return {}
    inputs = yaml.safe_load(path.read_text()).get("inputs") or {}
    return {name: spec["default"] for name, spec in inputs.items() if isinstance(spec, dict) and "default" in spec}


def add_flag(parser: argparse.ArgumentParser, name: str, *, setting: str | None = None, **kwargs: Any) -> None:
    """Add `--kebab-case` and `--snake_case` spellings of one flag; without a default, the component's.

    With `setting`, the flag carries that setting: its type and range are the setting field's.
    """
    kebab, snake = name.replace("_", "-"), name.replace("-", "_")
    spellings = [f"--{kebab}"] if kebab == snake else [f"--{kebab}", f"--{snake}"]
    defaults = getattr(parser, "component_defaults", {})
    if "default" not in kwargs and not kwargs.get("required") and snake in defaults:
        kwargs["default"] = defaults[snake]
    if setting is not None:
        from shared.settings import setting_default

        if "default" not in kwargs and not kwargs.get("required"):
            kwargs["default"] = setting_default(setting)
        kwargs["type"] = bounded(setting)
        getattr(parser, "settings_of", {})[snake] = setting
    parser.add_argument(*spellings, dest=snake, **kwargs)


def bounded(setting: str) -> Callable[[str], float]:
    """An argparse type for a flag that carries `setting`: a number of the field's kind, in the field's range."""
    from shared.settings import setting_bound

    bound = setting_bound(setting)
    return lambda value: _checked(value, bound.kind, bound.admits, f"{bound.describe()} ({setting})")


def boolean(value: str | bool) -> bool:
    """'true'/'false' as Azure ML and environment variables pass booleans."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def filename_list(value: str) -> list[str]:
    """`a.jpg;b.jpg` (`;`-separated image basenames) as a list; empty entries dropped."""
    return [name.strip() for name in value.split(";") if name.strip()]


def seed(value: str) -> int:
    """A random seed: numpy takes 0 to 2**32 - 1 only, and would fail on any other after the data is read."""
    return _checked(value, int, lambda number: 0 <= number < 2**32, f"a whole number from 0 to {2**32 - 1}")


def _checked(value: str, parse: Callable[[str], _Number], accept: Callable[[_Number], bool], expected: str) -> _Number:
    """`value` parsed and accepted, or the one-line refusal argparse prints after the flag's name (exit code 2)."""
    try:
        number = parse(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}") from None
    if not accept(number):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
    return number
