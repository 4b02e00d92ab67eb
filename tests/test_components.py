"""Azure ML components: each YAML loads offline with the SDK, and its command parses with the step's CLI."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest
from azure.ai.ml import Input, Output, load_component
from azure.ai.ml.entities import CommandComponent

from retrainer.assembly import graph
from retrainer.assembly.graph import COMPONENT_STEPS
from retrainer.assembly.step_inputs import step_settings
from retrainer.settings import Settings
from shared import COMPONENTS

DATA_TYPES = {"mltable", "uri_folder", "uri_file", "mlflow_model"}
#: A setting's port type, by the type of the value the settings give it.
SETTING_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}
#: Inputs that one runner sets itself, not from the settings: what only Azure ML needs (the `azureml://` image
#: prefix, the reused assets' names, AutoML's interpreter) and where the tag step scores (its CLI's default here).
RUNNER_INPUTS = {
    "input_images_string_absolute_path",
    "images_string_absolute_path",
    "train_dataset",
    "val_dataset",
    "automl_python",
    "scoring_env_manager",
}


def step_component(step: str) -> CommandComponent:
    """The step's component as Azure ML loads it from its YAML: a command component."""
    component = load_component(COMPONENTS / f"{step}.yml")
    assert isinstance(component, CommandComponent), type(component)
    return component


def _every_setting_given() -> Settings:
    """Settings that give every setting input a value (the filename lists are unset by default)."""
    return Settings(MANDATORY_TRAIN_FILENAMES="a.jpg", MANDATORY_VAL_FILENAMES="b.jpg")


@pytest.mark.parametrize("step", COMPONENT_STEPS)
def test_component_loads_and_validates_offline_with_the_graphs_ports(step: str) -> None:
    """Its outputs are the graph's, its data inputs typed as what feeds them, its settings typed as their values."""
    component = step_component(step)
    assert component._validate().passed
    declared = graph.step(step)
    ports = {name: port.type for name, port in component.inputs.items()}
    assert set(component.outputs) == set(declared.outputs)
    assert all(port.type in DATA_TYPES for port in component.outputs.values())
    for name, source in declared.inputs.items():
        assert ports.get(name) in DATA_TYPES, f"{step}.{name} is not a data input of {step}.yml"
        if isinstance(source, graph.StepOutput) and source.step != graph.TRAIN:
            feeding = step_component(source.step).outputs[source.output].type
            assert ports[name] == feeding, f"{step}.{name} reads {source.step}.{source.output}, a {feeding}"
        if name in declared.optional:
            assert component.inputs[name].optional, f"{step}.{name} is optional in the graph, not in {step}.yml"
    settings = step_settings(_every_setting_given())[step]
    for name, value in settings.items():
        assert ports.get(name) == SETTING_TYPES[type(value)], f"{step}.{name} carries a {type(value).__name__}"
    unexplained = set(ports) - set(declared.inputs) - set(settings) - RUNNER_INPUTS
    assert unexplained == set(), f"{step}.yml inputs neither the graph, the settings nor a runner gives"
    # The tag step scores AutoML's models in AutoML's own image (scoring_environment.yml); the others need no torch.
    expected = "pid-symbol-scoring:0.1.0" if step == "tag_model" else "pid-symbol-pipeline:0.1.0"
    assert component.environment == expected
    assert component.is_deterministic is False


_SAMPLE_VALUES = {"boolean": "True", "integer": "5", "number": "0.01", "string": "value"}


def _sample_value(name: str, port: Input | Output) -> str:
    """What Azure ML would put in the command for this port: its default, or a value of its type."""
    default = getattr(port, "default", None)
    if default not in (None, ""):
        return str(default)
    return _SAMPLE_VALUES.get(str(port.type), f"/mnt/{name}")


@pytest.mark.parametrize("step", COMPONENT_STEPS)
def test_component_command_is_accepted_by_the_step_cli(step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    component = step_component(step)
    ports = {**component.inputs, **component.outputs}
    command = re.sub(r"\$\[\[(.*?)\]\]", r"\1", str(component.command))  # optional inputs, here all given
    command = re.sub(
        r"\$\{\{(?:inputs|outputs)\.(\w+)\}\}",
        lambda m: _sample_value(m.group(1), ports[m.group(1)]),
        command,
    )
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", f"pipeline_steps.{step}"]
    real_parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: list[str] | None = None, namespace: object = None) -> None:
        real_parse(self, args, namespace)  # exits with code 2 on any flag the CLI does not know
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(f"pipeline_steps.{step}").main(words[3:])
    assert exited.value.code == 0


def test_environment_pins_exactly_what_the_steps_import() -> None:
    from azure.ai.ml import load_environment

    from devtools.step_environment import pip_list

    environment = load_environment(COMPONENTS / "environment.yml")
    assert environment.name == "pid-symbol-pipeline" and str(environment.image).startswith("mcr.microsoft.com/azureml/")
    pins = dict(line.split("==", 1) for line in pip_list())
    assert all(line.count("==") == 1 for line in pip_list()), "every package pinned to one version"
    for package in ("azure-ai-ml", "azure-identity", "azureml-mlflow", "faster-coco-eval", "orjson"):
        assert package in pins
    assert int(pins["azureml-mlflow"].split(".")[1]) >= 60, "not a years-old release"
    assert "azure-data-tables" not in pins, "inputs are mounted: no step talks to tables"


def test_the_local_runner_gives_the_local_trainer_its_settings(tmp_path: Path) -> None:
    from pipeline_steps import train
    from retrainer.workspace.local_runner import step_commands

    settings = Settings(LOCAL_TRAINING_MINUTES=0.5, LOCAL_TRAINING_EPOCHS=3, LOCAL_WARM_START_EPOCHS=2)
    args = train.build_parser().parse_args(step_commands(tmp_path, settings)[graph.TRAIN][3:])
    assert (args.max_minutes, args.epochs, args.warm_epochs) == (0.5, 3, 2)


def test_the_local_runner_passes_each_step_only_its_component_ports(tmp_path: Path) -> None:
    """Both runners take settings from one table: every flag the local runner sets is a port of the component."""
    from retrainer.workspace.local_runner import step_commands

    for step, command in step_commands(tmp_path, _every_setting_given()).items():
        if step == graph.TRAIN:  # the local trainer stands in for the AutoML node
            continue
        component = step_component(step)
        ports = set(component.inputs) | set(component.outputs)
        flags = {word[2:] for word in command[3:] if word.startswith("--")}
        assert flags <= ports, f"{step}: {sorted(flags - ports)} are not ports of {step}.yml"
        settable = {
            name for name, port in component.inputs.items() if port.type not in ("mltable", "uri_folder", "uri_file")
        }
        assert settable - flags <= RUNNER_INPUTS, f"{step}: a setting the local runner never passes"
