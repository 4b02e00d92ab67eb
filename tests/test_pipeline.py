"""The six-step Azure ML pipeline and its reuse variant, built, validated and dumped offline; the dry run."""

import pytest
import yaml

from retrainer import cli
from retrainer.settings import load_settings

WORKSPACE_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_RESOURCE_GROUP": "rg-pid",
    "AZUREML_WORKSPACE_NAME": "mlw-pid",
}


@pytest.fixture
def azureml_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in WORKSPACE_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("TRAIN_DATASET", "VAL_DATASET", "DATASET_VERSION_PATH", "WORKSPACE_BACKEND", "AUTO_MODE"):
        monkeypatch.delenv(key, raising=False)


def dumped(monkeypatch: pytest.MonkeyPatch) -> dict:
    from pipeline_steps.pipeline import build_pipeline_job, validate_pipeline

    job = build_pipeline_job(load_settings(), run_label="t")
    validate_pipeline(job)
    return job._to_dict()


@pytest.mark.usefixtures("azureml_env")
def test_six_steps_wired_in_order_with_cpu_default_and_gpu_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINING_MAX_TRIALS", "3")
    job = dumped(monkeypatch)
    jobs = job["jobs"]
    assert list(jobs) == [
        "data_aggregation",
        "data_split",
        "register_data_asset",
        "train",
        "register_model",
        "tag_model",
    ]
    assert job["settings"]["default_compute"] == "azureml:cpu-cluster"
    assert jobs["train"]["compute"] == "azureml:gpu-cluster" and jobs["train"]["limits"]["max_trials"] == 3
    assert job["inputs"]["images"]["path"] == "azureml://datastores/workspaceblobstore/paths/data/images"
    assert jobs["data_aggregation"]["inputs"]["input_images_string_absolute_path"] == (
        "azureml://subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg-pid/workspaces/mlw-pid"
        "/datastores/workspaceblobstore/paths/data/images"
    )
    assert (
        jobs["data_split"]["inputs"]["input_data_path"]["path"]
        == "${{parent.jobs.data_aggregation.outputs.output_path}}"
    )
    assert jobs["train"]["training_data"] == "${{parent.jobs.data_split.outputs.train_output_path}}"
    assert jobs["train"]["validation_data"] == "${{parent.jobs.data_split.outputs.val_output_path}}"
    register = jobs["register_model"]["inputs"]
    assert register["model_input_path"]["path"] == "${{parent.jobs.train.outputs.best_model}}"
    assert register["data_assets_path"]["path"] == "${{parent.jobs.register_data_asset.outputs.output_path}}"
    assert jobs["tag_model"]["inputs"]["model_metadata_path"]["path"] == (
        "${{parent.jobs.register_model.outputs.model_metadata_path}}"
    )


@pytest.mark.usefixtures("azureml_env")
def test_dataset_reuse_skips_the_data_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAIN_DATASET", "azureml:pid-symbols-train:4")
    monkeypatch.setenv("VAL_DATASET", "azureml:pid-symbols-val:4")
    monkeypatch.setenv("DATASET_VERSION_PATH", "azureml://datastores/workspaceblobstore/paths/azureml/abc/output_path")
    job = dumped(monkeypatch)
    assert list(job["jobs"]) == ["train", "register_model", "tag_model"]
    assert job["inputs"]["train_data"] == {"type": "mltable", "path": "azureml:pid-symbols-train:4"}
    assert job["jobs"]["register_model"]["inputs"]["data_assets_path"]["path"].endswith("/azureml/abc/output_path")


@pytest.mark.usefixtures("azureml_env")
def test_dry_run_writes_a_valid_pipeline_yaml_and_submits_nothing(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from azure.ai.ml import load_job

    output = tmp_path / "job.yml"
    assert cli.main(["submit", "--backend", "azureml", "--dry-run", "--output", str(output), "--json"]) == 0
    report = yaml.safe_load(capsys.readouterr().out)
    assert report["dry_run"] and len(report["steps"]) == 6
    reloaded = load_job(output)
    assert sorted(reloaded.jobs) == sorted(report["steps"])
    assert reloaded._validate().passed


def test_dry_run_without_workspace_settings_names_the_variables(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for key in WORKSPACE_ENV:
        monkeypatch.delenv(key, raising=False)
    assert cli.main(["submit", "--backend", "azureml", "--dry-run"]) == 2
    assert "AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME not set" in capsys.readouterr().err


def test_azureml_statuses_map_to_the_service_states() -> None:
    from retrainer.workspace import run_state

    assert [run_state(s) for s in ("NotStarted", "Preparing", "Running", "Finalizing", "Completed")] == [
        "queued",
        "queued",
        "running",
        "running",
        "completed",
    ]
    assert [run_state(s) for s in ("Failed", "NotResponding", "Canceled", "Paused", "Mystery")] == [
        "failed",
        "failed",
        "canceled",
        "canceled",
        "running",
    ]
