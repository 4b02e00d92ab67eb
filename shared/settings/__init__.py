"""What a pipeline step reads of the settings, and what a bad setting is.

A step opens the model registry from `RegistryLocation` (six variables, `load_registry_location`), never the
service's settings; its CLI takes a numeric flag's range from the settings field the flag carries
(`setting_bound`), in the groups a step's flags carry: `promotion` (the promotion rule) and `training` (the
split and holdout among them). The service composes these groups with its own into one `Settings`
(`retrainer.settings`), read from the same variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from shared.settings.checks import Bound, SettingsError, bound_of
from shared.settings.promotion import PromotionSettings
from shared.settings.registry import RegistryLocation
from shared.settings.training import TrainingSettings

__all__ = [
    "Bound",
    "PromotionSettings",
    "RegistryLocation",
    "SettingsError",
    "TrainingSettings",
    "bound_of",
    "load_registry_location",
    "setting_bound",
    "setting_default",
    "validated",
]

_Model = TypeVar("_Model", bound=BaseSettings)

#: The groups whose fields a step's flags carry (`add_flag(..., setting=...)`).
_STEP_GROUPS: tuple[type[BaseSettings], ...] = (PromotionSettings, TrainingSettings)


def setting_bound(name: str) -> Bound:
    """The range declared on the settings field `name` (an int or float field of a group a step's flag carries)."""
    for group in _STEP_GROUPS:
        if name in group.model_fields:
            return bound_of(group, name)
    raise KeyError(f"{name} is no setting a step's flag carries")


def setting_default(name: str) -> object:
    """The default declared on the settings field `name` (of a group a step's flag carries)."""
    for group in _STEP_GROUPS:
        if name in group.model_fields:
            return group.model_fields[name].default
    raise KeyError(f"{name} is no setting a step's flag carries")


def load_registry_location(**overrides: object) -> RegistryLocation:
    """Read and validate the registry's location alone (a step's only settings); SettingsError names every bad one."""
    return validated(RegistryLocation, overrides)


def validated(
    model: type[_Model], overrides: Mapping[str, object], aliases: Mapping[str, tuple[str, ...]] | None = None
) -> _Model:
    """`model` read from the environment (`overrides` win), or SettingsError naming every bad variable; `aliases`
    names the variables a field is read from, so the error names the one the user set."""
    try:
        return model(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"])
            variable = _variable_set(field, (aliases or {}).get(field, ()))
            message = "is not set" if item["type"] == "missing" else item["msg"].removeprefix("Value error, ")
            problems.append(f"{variable} {message}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def _variable_set(field: str, names: tuple[str, ...]) -> str:
    set_ = [name for name in names if os.environ.get(name)]
    return " and ".join(set_) if set_ else field
