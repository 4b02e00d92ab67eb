"""What a bad setting is: the error that names its variable, and a numeric setting's declared range."""

from __future__ import annotations

import math
from dataclasses import dataclass

import annotated_types
from pydantic import BaseModel
from pydantic_settings import SettingsConfigDict

#: Every settings group's configuration. Infinity and NaN are refused in every number: "inf" minutes would pass
#: `gt=0` and then overflow the first timedelta the timer builds from it.
SETTINGS_CONFIG = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True, allow_inf_nan=False)


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the environment variable."""


@dataclass(frozen=True)
class Bound:
    """A numeric setting's range, declared once, on its settings field: the service checks it at start, and the
    steps' CLIs and checks and the component YAML take it from here (`setting_bound`), so a value the service
    accepts is never one a step refuses after the run has trained."""

    setting: str
    kind: type[int] | type[float]
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True
    #: Infinity and NaN refused (`allow_inf_nan=False` on the field or its model, or a range closed on both sides).
    finite: bool = False

    def admits(self, value: float) -> bool:
        if self.finite and not math.isfinite(value):
            return False
        if self.low is not None and not (value >= self.low if self.low_inclusive else value > self.low):
            return False
        return self.high is None or bool(value <= self.high if self.high_inclusive else value < self.high)

    def describe(self) -> str:
        """'a finite number in [0, 1)', 'a whole number of at least 2', 'a finite number above 0', ..."""
        what = "a whole number" if self.kind is int else f"a{' finite' if self.finite else ''} number"
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"{what} in {'[' if self.low_inclusive else '('}{low}, {high}{']' if self.high_inclusive else ')'}"
        if self.low is not None:
            return f"{what} {'of at least' if self.low_inclusive else 'above'} {low}"
        if self.high is not None:
            return f"{what} {'of at most' if self.high_inclusive else 'below'} {high}"
        return what

    def check(self, value: float) -> float:
        """The value, or ValueError naming the setting and its range."""
        if not self.admits(value):
            raise ValueError(f"{self.setting} must be {self.describe()}, got {value}")
        return value


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def bound_of(model: type[BaseModel], name: str) -> Bound:
    """The range declared on the field `name` of `model` (an int or float field)."""
    field = model.model_fields[name]
    kinds: dict[object, type[int] | type[float]] = {int: int, float: float}
    if field.annotation not in kinds:
        raise TypeError(f"{name} is not a number setting")
    kind = kinds[field.annotation]
    low: float | None = None
    high: float | None = None
    low_inclusive = high_inclusive = True
    finite = model.model_config.get("allow_inf_nan", True) is False
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low_inclusive = isinstance(item, annotated_types.Ge)
            low = float(item.ge if isinstance(item, annotated_types.Ge) else item.gt)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Le | annotated_types.Lt):
            high_inclusive = isinstance(item, annotated_types.Le)
            high = float(item.le if isinstance(item, annotated_types.Le) else item.lt)  # type: ignore[arg-type]
        elif getattr(item, "allow_inf_nan", True) is False:
            finite = True
    # A closed range holds no infinity, and NaN fails every comparison.
    finite = finite or (low is not None and high is not None)
    return Bound(name, kind, low, low_inclusive, high, high_inclusive, finite)
