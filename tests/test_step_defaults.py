"""One default and one bound per setting, whichever spelling: settings, component YAML, step CLI.

A setting reaches a step as a component input (its `settings` in `graph.STEPS`); where the input has a
default in `components/<step>.yml`, it must be what the settings render by default, and the step's
CLI must fall back to it rather than to a default of its own. A number's range is declared once, on
the settings field: the step's CLI takes it from there, the YAML's `min`/`max` must equal it, and
the service refuses at start exactly what a step would refuse after the run has trained.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline_steps._cli import StepParser, component_defaults
from retrainer.assembly.graph import COMPONENT_STEPS
from retrainer.assembly.step_inputs import step_settings
from retrainer.settings import Settings, load_settings
from shared import COMPONENTS
from shared.settings import Bound, SettingsError, setting_bound

#: Inputs whose CLI default differs from the component's on purpose.
CLI_OWN_DEFAULTS = {("tag_model", "scoring_env_manager")}  # by hand the model runs here; on Azure ML in its own env


def _same(a: Any, b: Any) -> bool:
    """Empty means unset: an optional input left out (None), an empty YAML string, an empty list."""
    empty: tuple[object, ...] = (None, "", [])
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


def _parser(step: str) -> StepParser:
    parser = importlib.import_module(f"pipeline_steps.{step}").build_parser()
    assert isinstance(parser, StepParser)
    return parser


def _numbers(step: str, settings: Settings) -> dict[str, int | float]:
    rendered = step_settings(settings)[step]
    return {k: v for k, v in rendered.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _bounded_flags() -> list[tuple[str, str, str]]:
    return [(step, flag, setting) for step in COMPONENT_STEPS for flag, setting in _parser(step).settings_of.items()]


@pytest.mark.parametrize("step", COMPONENT_STEPS)
def test_every_number_a_setting_gives_a_step_carries_that_settings_bound(step: str, default_settings: Settings) -> None:
    carried = _parser(step).settings_of
    assert set(_numbers(step, default_settings)) <= set(carried), f"{step}: a number flag with no setting's bound"
    for flag, setting in carried.items():
        bound = setting_bound(setting)
        other = _inside(bound, getattr(default_settings, setting))
        changed = default_settings.model_copy(update={setting: other})
        assert step_settings(changed)[step][flag] == other, f"{step} --{flag} does not carry {setting}"


def _inside(bound: Bound, avoid: float) -> float:
    """A value the bound admits, other than `avoid`."""
    low = bound.low if bound.low is not None else 0.0
    high = bound.high if bound.high is not None else low + 10
    candidates = [(low + high) / 2, (low + 2 * high) / 3] if bound.kind is float else [int(low) + 3, int(low) + 4]
    value = next(bound.kind(c) for c in candidates if c != avoid)
    assert bound.admits(value)
    return value


def _probes(bound: Bound) -> list[str]:
    edges = [e for e in (bound.low, bound.high) if e is not None]
    near = [e + d for e in edges for d in (-1, -0.001, 0, 0.001, 1)]
    return sorted({f"{v:g}" for v in [*near, 0, 1, 1.5, 5, 100, -5]} | {"inf", "-inf", "nan", "0.5"})


@pytest.mark.parametrize(("step", "flag", "setting"), _bounded_flags())
def test_the_service_refuses_at_start_exactly_what_the_step_would_refuse(
    step: str, flag: str, setting: str, monkeypatch: pytest.MonkeyPatch, default_settings: Settings
) -> None:
    parser = _parser(step)
    required = [word for action in parser._actions if action.required for word in (action.option_strings[0], "x")]
    for text in _probes(setting_bound(setting)):
        monkeypatch.setenv(setting, text)
        try:
            load_settings()
            service = True
        except SettingsError as error:
            assert setting in str(error)
            service = False
        try:
            parser.parse_args([*required, f"--{flag}", text])
            cli = True
        except SystemExit:
            cli = False
        assert service == cli, f"{setting}={text}: the service {'accepts' if service else 'refuses'} it, " + (
            f"the step {'accepts' if cli else 'refuses'} it"
        )


@pytest.mark.parametrize(("step", "flag", "setting"), _bounded_flags())
def test_the_component_yaml_states_the_same_bound(step: str, flag: str, setting: str) -> None:
    """Azure ML's `min`/`max` are inclusive: an inclusive end is written as the bound says, an open one not at all."""
    spec = yaml.safe_load((COMPONENTS / f"{step}.yml").read_text())["inputs"][flag]
    bound = setting_bound(setting)
    assert spec["type"] == ("integer" if bound.kind is int else "number")
    assert spec.get("min") == (bound.low if bound.low is not None and bound.low_inclusive else None)
    assert spec.get("max") == (bound.high if bound.high is not None and bound.high_inclusive else None)


def test_a_min_map_improvement_of_one_and_a_half_is_refused_at_start_not_after_training(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("MIN_MAP_IMPROVEMENT", "1.5")
    with pytest.raises(SettingsError, match=r"MIN_MAP_IMPROVEMENT .*less than 1"):
        load_settings()
    tag_model = importlib.import_module("pipeline_steps.tag_model")
    with pytest.raises(SystemExit) as exited:
        tag_model.main(
            ["--model-metadata-path", "m", "--best-model-metadata-path", "b", "--min-map-improvement", "1.5"]
        )
    assert exited.value.code == 2
    assert "a finite number in [0, 1) (MIN_MAP_IMPROVEMENT), got '1.5'" in capsys.readouterr().err
    assert math.isclose(setting_bound("MIN_MAP_IMPROVEMENT").high or 0, 1.0)
