"""Step 4 on Azure ML: the AutoML node builds and validates offline from the settings; its warm start."""

import json
from pathlib import Path

import pytest
from azure.ai.ml import Input, dsl

from retrainer.assembly.automl_node import (
    ACCEPTED_HYPERPARAMETERS,
    SEARCH_SPACE_FILE,
    AutoMLConfig,
    SearchSpaceError,
    WarmStartDecision,
    build_automl_node,
    champion_checkpoint,
    load_search_space,
)
from retrainer.settings import load_settings
from shared.records import ModelVersion
from tests.helpers import search_space_dumped_as_a_file, sent_pipeline

TRAIN = Input(type="mltable", path="azureml:pid-symbols-train:3")
VAL = Input(type="mltable", path="azureml:pid-symbols-val:3")


def dumped_node(config: AutoMLConfig, with_validation: bool = True) -> dict:
    """The node inside a pipeline, validated and dumped as the service would submit it.

    (No `from __future__ import annotations` in this file: dsl.pipeline reads the real annotations.)
    """

    @dsl.pipeline(None, default_compute="cpu-cluster")  # the SDK's overloads want `func` named when it is None
    def training_only(train: Input, val: Input) -> dict:
        node = build_automl_node(config, train, val if with_validation else None)
        return {"best_model": node.outputs["best_model"]}

    job = training_only(train=TRAIN, val=VAL)
    validation = job._validate()
    assert validation.passed, validation.error_messages
    with search_space_dumped_as_a_file():
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


CLASSES = frozenset({"1", "2", "3"})
FASTER_RCNN = "fasterrcnn_resnet50_fpn"
AUTOML_CHAMPION = {"source_run": "AutoML_abc_HD_3", "class_ids": '["1","2","3"]', "automl_model_name": FASTER_RCNN}


def champion(tags: dict[str, str], version: str = "4") -> ModelVersion:
    return ModelVersion("pid-symbol-detector", version, {"best_model": "true", **tags}, f"azureml:x:{version}")


def decide(
    versions: list[ModelVersion],
    class_ids: frozenset[str] | None = CLASSES,
    *,
    enabled: bool = True,
    auto_mode: bool = True,
    model_name: str = FASTER_RCNN,
) -> WarmStartDecision:
    return champion_checkpoint(versions, class_ids, enabled=enabled, auto_mode=auto_mode, model_name=model_name)


def test_the_champions_automl_run_seeds_training_only_when_it_knew_every_class() -> None:
    assert decide([champion(AUTOML_CHAMPION)]).checkpoint_run_id == "AutoML_abc_HD_3"
    grown = decide([champion(AUTOML_CHAMPION)], CLASSES | {"4"})
    assert grown.checkpoint_run_id is None and "new ['4']" in grown.reason
    assert decide([]).reason.startswith("no champion yet")
    assert decide([champion({**AUTOML_CHAMPION, "source_run": "local-trainer"})]).checkpoint_run_id is None
    assert decide([champion(AUTOML_CHAMPION)], None).checkpoint_run_id is None, "no label map: cannot check"
    assert "WARM_START=false" in decide([champion(AUTOML_CHAMPION)], enabled=False).reason


def test_a_sweep_never_starts_from_the_champions_checkpoint() -> None:
    """Every trial of a sweep would load it, and AutoML raises for a trial of another model_name."""
    sweep = decide([champion(AUTOML_CHAMPION)], auto_mode=False)
    assert sweep.checkpoint_run_id is None and "AUTO_MODE=false" in sweep.reason


def test_auto_mode_starts_from_the_checkpoint_only_of_the_model_it_trains() -> None:
    same = decide([champion(AUTOML_CHAMPION)], model_name=FASTER_RCNN)
    assert same.checkpoint_run_id == "AutoML_abc_HD_3" and FASTER_RCNN in same.reason
    other = decide([champion(AUTOML_CHAMPION)], model_name="yolov5")
    assert other.checkpoint_run_id is None
    assert f"is a {FASTER_RCNN} but AutoML trains yolov5 (TRAINING_MODEL_NAME)" in other.reason


def test_a_champion_registered_without_its_model_name_gets_no_checkpoint() -> None:
    unknown = {key: value for key, value in AUTOML_CHAMPION.items() if key != "automl_model_name"}
    decision = decide([champion(unknown)])
    assert decision.checkpoint_run_id is None and "no automl_model_name tag" in decision.reason


def test_a_sweep_config_refuses_a_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTO_MODE", "false")
    with pytest.raises(ValueError, match=r"sweep \(AUTO_MODE=false\)"):
        AutoMLConfig.from_settings(load_settings(), checkpoint_run_id="AutoML_abc_HD_3")


WORKSPACE_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_RESOURCE_GROUP": "rg-pid",
    "AZUREML_WORKSPACE_NAME": "mlw-pid",
    "PIPELINE_COMPONENTS": "local",
}


def submitted_training(monkeypatch: pytest.MonkeyPatch, champion_tags: dict[str, str], **env: str) -> tuple[dict, dict]:
    """(train node, job tags) of the REST body the Azure ML runner submits; only the workspace calls are faked."""
    from azure.ai.ml.entities import Model, PipelineJob

    from retrainer.workspace.azureml import AzureMLPipelineRunner

    for key in ("TRAIN_DATASET", "VAL_DATASET", "WORKSPACE_BACKEND", "TRAINING_MODEL_NAME", "WARM_START"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**WORKSPACE_ENV, **env}.items():
        monkeypatch.setenv(key, value)
    submitted: list[PipelineJob] = []

    class Models:
        def list(self, name: str) -> list[Model]:
            tags = {"best_model": "true", **champion_tags}
            return [Model(name=name, version="4", path="azureml://x", tags=tags)]

    class Jobs:
        def create_or_update(self, job: PipelineJob, experiment_name: str) -> PipelineJob:
            submitted.append(job)
            job.name = "job-1"
            return job

    client = type("Client", (), {"models": Models(), "jobs": Jobs()})()
    assert AzureMLPipelineRunner(client, load_settings(), lambda: CLASSES).submit_pipeline("t") == "job-1"
    rest = sent_pipeline(submitted[0])
    assert rest.jobs is not None
    return rest.jobs["train"], dict(rest.tags or {})


@pytest.mark.parametrize(
    ("env", "champion_tags", "checkpoint", "reason"),
    [
        ({"AUTO_MODE": "true"}, AUTOML_CHAMPION, "AutoML_abc_HD_3", "warm start from champion version 4"),
        ({"AUTO_MODE": "true", "TRAINING_MODEL_NAME": "yolov5"}, AUTOML_CHAMPION, None, "AutoML trains yolov5"),
        ({"AUTO_MODE": "false"}, AUTOML_CHAMPION, None, "a sweep (AUTO_MODE=false)"),
        ({"AUTO_MODE": "true"}, {"source_run": "AutoML_abc_HD_3", "class_ids": '["1","2","3"]'}, None, "no automl"),
    ],
    ids=["auto-same-model", "auto-other-model", "sweep", "champion-without-model-name"],
)
def test_the_submitted_automl_node_carries_the_checkpoint_only_where_automl_accepts_it(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    champion_tags: dict[str, str],
    checkpoint: str | None,
    reason: str,
) -> None:
    train, tags = submitted_training(monkeypatch, champion_tags, **env)
    assert (train.get("training_parameters") or {}).get("checkpoint_run_id") == checkpoint
    assert reason in tags["warm_start"]
    if env["AUTO_MODE"] == "false":
        assert train["search_space"] and "checkpoint_run_id" not in json.dumps(train)
