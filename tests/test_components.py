"""Azure ML components: each YAML loads offline with the SDK, and its command parses with the step's CLI."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest
from azure.ai.ml import load_component

COMPONENTS = Path(__file__).resolve().parent.parent / "pipeline_steps" / "components"

EXPECTED = {
    "data_aggregation": (
        {
            "input_image_data_path": "uri_folder",
            "input_label_data_path": "uri_folder",
            "input_images_string_absolute_path": "string",
        },
        {"output_path": "mltable"},
    ),
    "data_split": (
        {
            "input_data_path": "mltable",
            "use_stratified_split": "boolean",
            "stratified_split_n_fold": "integer",
            "mandatory_train_filenames": "string",
            "mandatory_val_filenames": "string",
            "rare_class_policy": "string",
        },
        {"train_output_path": "mltable", "val_output_path": "mltable"},
    ),
    "register_data_asset": (
        {"train_input_path": "mltable", "val_input_path": "mltable", "data_store_name": "string"},
        {"output_path": "uri_folder"},
    ),
    "register_model": (
        {
            "model_base_name": "string",
            "model_input_path": "mlflow_model",
            "data_assets_path": "uri_folder",
            "train_dataset": "string",
            "val_dataset": "string",
        },
        {"model_metadata_path": "uri_folder"},
    ),
    "tag_model": (
        {"model_base_name": "string", "model_metadata_path": "uri_folder", "min_map_improvement": "number"},
        {"best_model_metadata_path": "uri_folder"},
    ),
}


@pytest.mark.parametrize("step", sorted(EXPECTED))
def test_component_loads_and_validates_offline_with_typed_ports(step: str) -> None:
    component = load_component(COMPONENTS / f"{step}.yml")
    assert component._validate().passed
    inputs, outputs = EXPECTED[step]
    assert {name: port.type for name, port in component.inputs.items()} == inputs
    assert {name: port.type for name, port in component.outputs.items()} == outputs
    assert component.environment == "pid-symbol-pipeline:0.1.0"
    assert component.is_deterministic is False


_SAMPLE_VALUES = {"boolean": "True", "integer": "5", "number": "0.01", "string": "value"}


def _sample_value(name: str, port: object) -> str:
    """What Azure ML would put in the command for this port: its default, or a value of its type."""
    default = getattr(port, "default", None)
    if default not in (None, ""):
        return str(default)
    return _SAMPLE_VALUES.get(port.type, f"/mnt/{name}")  # type: ignore[attr-defined]


@pytest.mark.parametrize("step", sorted(EXPECTED))
def test_component_command_is_accepted_by_the_step_cli(step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    component = load_component(COMPONENTS / f"{step}.yml")
    ports = {**component.inputs, **component.outputs}
    command = re.sub(r"\$\[\[(.*?)\]\]", r"\1", component.command)  # optional inputs, here all given
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
    assert environment.name == "pid-symbol-pipeline" and environment.image.startswith("mcr.microsoft.com/azureml/")
    pins = dict(line.split("==", 1) for line in pip_list())
    assert all(line.count("==") == 1 for line in pip_list()), "every package pinned to one version"
    for package in ("azure-ai-ml", "azure-identity", "azureml-mlflow", "iterative-stratification", "orjson"):
        assert package in pins
    assert int(pins["azureml-mlflow"].split(".")[1]) >= 60, "not a years-old release"
    assert "azure-data-tables" not in pins, "inputs are mounted: no step talks to tables"
