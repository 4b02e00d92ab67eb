"""Shared argument handling of the step CLIs.

Every flag answers to its `--kebab-case` and `--snake_case` spelling: the steps' users already call
them both ways (the original pipeline mixed the two). Settings reach a step only as flags (component
inputs), never from the environment: `step_inputs.py` maps settings to them for both runners.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add `--kebab-case` and `--snake_case` spellings of one flag."""
    kebab, snake = name.replace("_", "-"), name.replace("-", "_")
    spellings = [f"--{kebab}"] if kebab == snake else [f"--{kebab}", f"--{snake}"]
    parser.add_argument(*spellings, dest=snake, **kwargs)


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
