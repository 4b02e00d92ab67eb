"""Step 4 on Azure ML: the AutoML node builds and validates offline from the settings."""

from pathlib import Path

import pytest
from azure.ai.ml import Input, dsl

from pipeline_steps.automl_node import (
    ACCEPTED_HYPERPARAMETERS,
    SEARCH_SPACE_FILE,
    AutoMLConfig,
    SearchSpaceError,
    build_automl_node,
    load_search_space,
)
from retrainer.settings import load_settings

TRAIN = Input(type="mltable", path="azureml:pid-symbols-train:3")
VAL = Input(type="mltable", path="azureml:pid-symbols-val:3")


def dumped_node(config: AutoMLConfig, with_validation: bool = True) -> dict:
    """The node inside a pipeline, validated and dumped as the service would submit it.

    (No `from __future__ import annotations` in this file: dsl.pipeline reads the real annotations.)
    """

    @dsl.pipeline(default_compute="cpu-cluster")
    def training_only(train: Input, val: Input) -> dict:
        node = build_automl_node(config, train, val if with_validation else None)
        return {"best_model": node.outputs.best_model}

    job = training_only(train=TRAIN, val=VAL)
    validation = job._validate()
    assert validation.passed, validation.error_messages
    dumped = job._to_dict()
    (node,) = dumped["jobs"].values()
    return {**node, "pipeline_outputs": dumped["outputs"]}


def test_auto_mode_node_uses_the_env_limits_and_gpu_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTO_MODE", "true")
    monkeypatch.setenv("TRAINING_MAX_TRIALS", "12")
    monkeypatch.setenv("TRAINING_GPU_COMPUTE_NAME", "gpu-a100")
    node = dumped_node(AutoMLConfig.from_settings(load_settings()))
    assert (node["type"], node["task"]) == ("automl", "image_object_detection")
    assert node["compute"] == "azureml:gpu-a100"
    assert node["primary_metric"] == "mean_average_precision" and node["target_column_name"] == "label"
    assert node["limits"] == {"timeout_minutes": 180, "max_trials": 1, "max_concurrent_trials": 1}, (
        "a fixed model is one trial: more without a search space would switch AutoML into AutoMode (preview)"
    )
    assert node["outputs"]["best_model"]["value"] == "${{parent.outputs.best_model}}"
    assert node["pipeline_outputs"]["best_model"]["type"] == "mlflow_model"
    assert node.get("search_space") is None and node.get("sweep") is None
    assert node["validation_data"] == "${{parent.inputs.val}}" and node.get("validation_data_size") is None


def test_without_a_validation_set_automl_holds_out_the_configured_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINING_VALIDATION_DATA_SIZE", "0.25")
    node = dumped_node(AutoMLConfig.from_settings(load_settings()), with_validation=False)
    assert node["validation_data_size"] == 0.25 and "validation_data" not in node


def test_manual_mode_sweeps_the_checked_in_search_space(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTO_MODE", "false")
    monkeypatch.setenv("TRAINING_MAX_TRIALS", "12")
    node = dumped_node(AutoMLConfig.from_settings(load_settings()))
    assert node["limits"] == {"timeout_minutes": 180, "max_trials": 12, "max_concurrent_trials": 4}
    families = [entry["model_name"]["values"] for entry in node["search_space"]]
    assert families == [["yolov5"], ["fasterrcnn_resnet50_fpn"]]
    assert node["sweep"]["sampling_algorithm"] == "random"
    assert node["sweep"]["early_termination"]["type"] == "bandit"
    assert node["search_space"][0]["learning_rate"] == {"type": "uniform", "min_value": 0.0001, "max_value": 0.01}


def test_unknown_search_space_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "space.yml"
    path.write_text("- model_name: yolov5\n  learnig_rate: {type: uniform, min_value: 0.001, max_value: 0.01}\n")
    with pytest.raises(SearchSpaceError, match=r"entry 0 \(yolov5\): unknown hyperparameter 'learnig_rate'"):
        load_search_space(path)


def test_accepted_hyperparameters_come_from_the_sdk() -> None:
    assert {"model_name", "learning_rate", "model_size", "tile_grid_size", "min_size"} <= ACCEPTED_HYPERPARAMETERS
    assert len(load_search_space(SEARCH_SPACE_FILE)) == 2
