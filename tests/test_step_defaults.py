"""One default per setting: the component's default is the setting's, and the step CLI takes the component's.

A setting reaches a step as a component input (`step_inputs.step_settings`); where the input has a
default in `components/<step>.yml`, it must be what the settings render by default, and the step's
CLI must fall back to it rather than to a default of its own.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from pipeline_steps._cli import component_defaults
from pipeline_steps.graph import STEPS, TRAIN
from pipeline_steps.step_inputs import step_settings
from retrainer.settings import Settings

COMPONENT_STEPS = [step.name for step in STEPS if step.name != TRAIN]
#: Inputs whose CLI default differs from the component's on purpose.
CLI_OWN_DEFAULTS = {("tag_model", "scoring_env_manager")}  # by hand the model runs here; on Azure ML in its own env


def _same(a: Any, b: Any) -> bool:
    """Empty means unset: an optional input left out (None), an empty YAML string, an empty list."""
    empty = (None, "", [])
    return (a in empty and b in empty) or a == b


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for field in Settings.model_fields:
        monkeypatch.delenv(field, raising=False)
    return Settings()


@pytest.mark.parametrize("step", COMPONENT_STEPS)
def test_every_component_default_is_what_the_settings_render(step: str, default_settings: Settings) -> None:
    rendered = step_settings(default_settings)[step]
    defaults = component_defaults(step)
    for name, value in rendered.items():
        assert name in defaults or value is None, f"{step}.{name}: the setting has no component default"
        if name in defaults:
            assert _same(defaults[name], value), f"{step}.{name}: component {defaults[name]!r}, settings {value!r}"


@pytest.mark.parametrize("step", COMPONENT_STEPS)
def test_every_step_cli_falls_back_to_its_components_defaults(step: str) -> None:
    parser = importlib.import_module(f"pipeline_steps.{step}").build_parser()
    required = {action.dest: action for action in parser._actions if action.required}
    parsed = vars(parser.parse_args([word for dest in required for word in (f"--{dest}", "x")]))
    for name, value in component_defaults(step).items():
        if (step, name) in CLI_OWN_DEFAULTS:
            continue
        converted = value if not isinstance(value, str) else parser._option_string_actions[f"--{name}"].type
        expected = converted(value) if callable(converted) else value
        assert _same(parsed[name], expected), f"{step} --{name}: CLI {parsed[name]!r}, component {value!r}"


def test_a_flag_without_a_default_takes_the_components(tmp_path: Any) -> None:
    """The mechanism itself: a parser built for a step fills in what the component declares."""
    from pipeline_steps._cli import add_flag, step_parser

    parser = step_parser("tag_model", None)
    add_flag(parser, "min-map-improvement", type=float)
    add_flag(parser, "bootstrap-resamples", type=int, default=7)
    add_flag(parser, "not-an-input")
    parsed = parser.parse_args([])
    assert (parsed.min_map_improvement, parsed.bootstrap_resamples, parsed.not_an_input) == (0, 7, None)
