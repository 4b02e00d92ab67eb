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
            "holdout_fraction": "number",
            "holdout_min_images_per_class": "integer",
            "rare_class_policy": "string",
            "assignment_name": "string",
        },
        {"train_output_path": "mltable", "val_output_path": "mltable", "holdout_output_path": "mltable"},
    ),
    "register_data_asset": (
        {
            "train_input_path": "mltable",
            "val_input_path": "mltable",
            "holdout_input_path": "mltable",
            "data_store_name": "string",
        },
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
        {
            "model_base_name": "string",
            "model_metadata_path": "uri_folder",
            "holdout_data_path": "mltable",
            "holdout_images_path": "uri_folder",
            "images_string_absolute_path": "string",
            "min_map_improvement": "number",
            "confidence_level": "number",
            "bootstrap_resamples": "integer",
            "max_holdout_images": "integer",
            "scoring_budget_minutes": "number",
            "min_holdout_images": "integer",
            "min_class_instances": "integer",
            "max_class_ap_drop": "number",
            "label_map_path": "uri_file",
            "scoring_env_manager": "string",
            "automl_python": "string",
        },
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
    # The tag step scores AutoML's models in AutoML's own image (scoring_environment.yml); the others need no torch.
    expected = "pid-symbol-scoring:0.1.0" if step == "tag_model" else "pid-symbol-pipeline:0.1.0"
    assert component.environment == expected
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
    for package in ("azure-ai-ml", "azure-identity", "azureml-mlflow", "faster-coco-eval", "orjson"):
        assert package in pins
    assert int(pins["azureml-mlflow"].split(".")[1]) >= 60, "not a years-old release"
    assert "azure-data-tables" not in pins, "inputs are mounted: no step talks to tables"


def test_the_local_runner_passes_each_step_only_its_component_ports(tmp_path: Path) -> None:
    """Both runners take settings from one table: every flag the local runner sets is a port of the component."""
    from retrainer.settings import Settings
    from retrainer.workspace.local_runner import step_commands

    settings = Settings(MANDATORY_TRAIN_FILENAMES="a.jpg", MANDATORY_VAL_FILENAMES="b.jpg")
    for step, command in step_commands(tmp_path, settings).items():
        if step not in EXPECTED:  # the local trainer stands in for the AutoML node
            continue
        component = load_component(COMPONENTS / f"{step}.yml")
        ports = set(component.inputs) | set(component.outputs)
        flags = {word[2:] for word in command[3:] if word.startswith("--")}
        assert flags <= ports, f"{step}: {sorted(flags - ports)} are not ports of {step}.yml"
        settable = {
            name for name, port in component.inputs.items() if port.type not in ("mltable", "uri_folder", "uri_file")
        }
        azure_only = {
            "input_images_string_absolute_path",
            "images_string_absolute_path",
            "train_dataset",
            "val_dataset",
            "automl_python",  # AutoML's interpreter in the tag step's Azure ML image; locally the model runs in-process
        }
        assert settable - flags <= azure_only, f"{step}: a setting the local runner never passes"
