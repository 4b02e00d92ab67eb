"""The Azure ML pipeline of the graph's steps and its reuse variant, built, validated and dumped offline."""

import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
import yaml
from azure.ai.ml.entities import PipelineJob

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

from devtools.function_package import FuncIgnore
from retrainer import cli
from retrainer.assembly.graph import COMPONENT_STEPS, REUSE_STEPS, STEPS, TRAIN, PipelineInput
from retrainer.settings import load_settings
from tests.helpers import search_space_dumped_as_a_file, sent_pipeline

WORKSPACE_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_RESOURCE_GROUP": "rg-pid",
    "AZUREML_WORKSPACE_NAME": "mlw-pid",
}


@pytest.fixture
def azureml_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in WORKSPACE_ENV.items():
        monkeypatch.setenv(key, value)
    for key in (
        "TRAIN_DATASET",
        "VAL_DATASET",
        "DATASET_VERSION_PATH",
        "WORKSPACE_BACKEND",
        "AUTO_MODE",
        "DATA_STORE_NAME",
        "PIPELINE_COMPONENTS",
        "USE_STRATIFIED_SPLIT",
        "MIN_MAP_IMPROVEMENT",
    ):
        monkeypatch.delenv(key, raising=False)


def built(**env: str) -> PipelineJob:
    from retrainer.assembly.pipeline import build_pipeline_job, validate_pipeline

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        job = build_pipeline_job(load_settings(), run_label="t")
    validate_pipeline(job)
    return job


def dumped(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    job = built(**env)
    with search_space_dumped_as_a_file():  # an SDK leak from any earlier submission: see tests.helpers
        return job._to_dict()


@pytest.mark.usefixtures("azureml_env")
def test_the_graphs_steps_wired_in_order_with_cpu_default_and_gpu_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINING_MAX_TRIALS", "3")
    job = dumped(monkeypatch)
    jobs = job["jobs"]
    assert list(jobs) == [step.name for step in STEPS]
    assert job["settings"]["default_compute"] == "azureml:cpu-cluster"
    assert jobs["train"]["compute"] == "azureml:gpu-cluster"
    assert jobs["train"]["limits"]["max_trials"] == 1, "a fixed model is one trial, never AutoMode"
    assert job["identity"] == {"type": "managed_identity"}, "jobs run as the compute's identity, not AmlToken"
    assert job["inputs"]["images"]["path"] == "azureml://datastores/retraining_data/paths/data/images"
    assert jobs["data_aggregation"]["inputs"]["input_images_string_absolute_path"] == (
        "azureml://subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg-pid/workspaces/mlw-pid"
        "/datastores/retraining_data/paths/data/images"
    )
    assert jobs["train"]["training_data"] == "${{parent.jobs.data_split.outputs.train_output_path}}"
    assert jobs["train"]["validation_data"] == "${{parent.jobs.data_split.outputs.val_output_path}}"
    for step in STEPS:
        if step.name == TRAIN:
            continue
        for name, source in step.inputs.items():
            bound = jobs[step.name]["inputs"].get(name)
            if isinstance(source, PipelineInput):
                expected = f"${{{{parent.inputs.{source.name}}}}}"
                if bound is None and name in step.optional:
                    continue  # no label map given to this job
            else:
                expected = f"${{{{parent.jobs.{source.step}.outputs.{source.output}}}}}"
            assert bound is not None and bound["path"] == expected, f"{step.name}.{name}"


@pytest.mark.usefixtures("azureml_env")
def test_the_deciding_step_gets_the_holdout_and_scores_both_models_in_their_own_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tag step must score champion and challenger on the holdout, not compare recorded scores."""
    jobs = dumped(monkeypatch, HOLDOUT_FRACTION="0.25", PROMOTION_BOOTSTRAP_RESAMPLES="2000")["jobs"]
    tag = jobs["tag_model"]["inputs"]
    assert tag["holdout_data_path"]["path"] == "${{parent.jobs.data_split.outputs.holdout_output_path}}"
    assert tag["holdout_images_path"]["path"] == "${{parent.inputs.images}}"
    assert tag["images_string_absolute_path"] == jobs["data_aggregation"]["inputs"]["input_images_string_absolute_path"]
    assert tag["bootstrap_resamples"] == 2000 and tag["confidence_level"] == 0.95
    assert jobs["data_split"]["inputs"]["holdout_fraction"] == 0.25
    assert jobs["register_data_asset"]["inputs"]["holdout_input_path"]["path"] == (
        "${{parent.jobs.data_split.outputs.holdout_output_path}}"
    )
    # AutoML's MLflow model loads only where AutoML's code is: the step runs on AutoML's image and scores in its
    # interpreter, and nothing builds the model's declared environment at run time.
    from azure.ai.ml import load_component

    from retrainer.assembly.pipeline import COMPONENTS

    component = load_component(COMPONENTS / "tag_model.yml")
    assert component.inputs["scoring_env_manager"].default == "automl"
    assert "scoring_env_manager" not in tag or tag["scoring_env_manager"] == "automl"
    assert jobs["tag_model"]["component"]["environment"].startswith("azureml:pid-symbol-scoring:")


@pytest.mark.usefixtures("azureml_env")
def test_the_deciding_step_scores_on_the_gpu_compute_within_a_cap_and_a_budget(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """AutoML's tiled Faster R-CNN takes minutes a sheet on a CPU: the tag step runs on the GPU compute, bounded."""
    output = tmp_path / "job.yml"
    assert cli.main(["submit", "--backend", "azureml", "--dry-run", "--output", str(output), "--json"]) == 0
    capsys.readouterr()
    tag = yaml.safe_load(output.read_text())["jobs"]["tag_model"]
    assert tag["compute"] == "azureml:gpu-cluster"
    assert (tag["inputs"]["max_holdout_images"], tag["inputs"]["scoring_budget_minutes"]) == (200, 60)
    for job in (built(), built(TRAIN_DATASET="azureml:t:1", VAL_DATASET="azureml:v:1")):
        assert job.jobs["tag_model"].compute == "gpu-cluster"
    jobs = dumped(
        monkeypatch,
        PROMOTION_COMPUTE_NAME="cpu-scoring",
        PROMOTION_MAX_HOLDOUT_IMAGES="50",
        PROMOTION_SCORING_MINUTES="20",
    )["jobs"]
    assert jobs["tag_model"]["compute"] == "azureml:cpu-scoring"
    assert (
        jobs["tag_model"]["inputs"]["max_holdout_images"],
        jobs["tag_model"]["inputs"]["scoring_budget_minutes"],
    ) == (
        50,
        20,
    )
    assert jobs["register_model"].get("compute") is None, "the other steps stay on the default CPU compute"


@pytest.mark.usefixtures("azureml_env")
def test_dataset_reuse_skips_the_data_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAIN_DATASET", "azureml:pid-symbols-train:4")
    monkeypatch.setenv("VAL_DATASET", "azureml:pid-symbols-val:4")
    monkeypatch.setenv("DATASET_VERSION_PATH", "azureml://datastores/workspaceblobstore/paths/azureml/abc/output_path")
    job = dumped(monkeypatch)
    assert list(job["jobs"]) == [step.name for step in REUSE_STEPS] and TRAIN in job["jobs"]
    assert "images" not in job["inputs"], "no step reads the datastore's images"
    assert job["inputs"]["train_data"] == {"type": "mltable", "path": "azureml:pid-symbols-train:4"}
    assert job["jobs"]["register_model"]["inputs"]["data_assets_path"]["path"].endswith("/azureml/abc/output_path")


@pytest.mark.usefixtures("azureml_env")
def test_dry_run_writes_a_valid_pipeline_yaml_and_submits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from azure.ai.ml import load_job

    output = tmp_path / "job.yml"
    assert cli.main(["submit", "--backend", "azureml", "--dry-run", "--output", str(output), "--json"]) == 0
    report = yaml.safe_load(capsys.readouterr().out)
    assert report["dry_run"] and len(report["steps"]) == len(STEPS)
    reloaded = load_job(output)
    assert isinstance(reloaded, PipelineJob)
    assert sorted(reloaded.jobs) == sorted(report["steps"])
    assert reloaded._validate().passed
    document = yaml.safe_load(output.read_text())
    assert document["settings"]["force_rerun"] is True
    assert document["inputs"]["images"]["path"].startswith("azureml://datastores/retraining_data/")
    assert document["jobs"]["tag_model"]["component"].startswith("azureml:pid_tag_model:")
    assert "min_map_improvement" in document["jobs"]["tag_model"]["inputs"]
    # The file shows what each step runs on: the tag step on AutoML's image with the steps' pins beside it.
    release = document["jobs"]["tag_model"]["component"].rsplit(":", 1)[1]
    assert document["jobs"]["tag_model"]["environment"] == f"azureml:pid-symbol-scoring:{release}"
    assert document["jobs"]["data_split"]["environment"] == f"azureml:pid-symbol-pipeline:{release}"
    assert report["environments"]["tag_model"] == f"azureml:pid-symbol-scoring:{release}"
    assert str(reloaded.jobs["tag_model"].environment) == f"pid-symbol-scoring:{release}"
    assert document["jobs"]["train"]["training_parameters"]["tile_grid_size"] == "6x4"


def test_dry_run_without_workspace_settings_names_the_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in WORKSPACE_ENV:
        monkeypatch.delenv(key, raising=False)
    assert cli.main(["submit", "--backend", "azureml", "--dry-run"]) == 2
    assert "AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME not set" in capsys.readouterr().err


def test_azureml_statuses_map_to_the_service_states() -> None:
    from shared.records import run_state

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


# --- what a real workspace needs (each of these failed on the first offline-only version) ---------------


def azureml_paths(document: Any) -> list[str]:
    """Every azureml:// path the job binds (not the components' own descriptions)."""
    nodes = {name: {k: v for k, v in node.items() if k != "component"} for name, node in document["jobs"].items()}
    text = json.dumps({**document, "jobs": nodes})
    return [part.split('"')[0] for part in text.split('"azureml://')[1:]]


@pytest.mark.usefixtures("azureml_env")
def test_the_pipeline_reads_the_service_container_through_its_datastore_not_the_workspace_system_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().DATA_STORE_NAME != "workspaceblobstore"
    job = dumped(monkeypatch, DATA_STORE_NAME="pid_data")
    paths = azureml_paths(job)
    assert paths and all("/datastores/pid_data/paths/data/" in "/" + path for path in paths)
    assert job["jobs"]["register_data_asset"]["inputs"]["data_store_name"] == "pid_data"


@pytest.mark.usefixtures("azureml_env")
def test_data_and_registry_steps_are_never_reused_from_an_earlier_run(monkeypatch: pytest.MonkeyPatch) -> None:
    job = built(PIPELINE_COMPONENTS="local")
    assert job.settings is not None and job.settings.force_rerun is True
    for step in COMPONENT_STEPS:
        assert job.jobs[step].component.is_deterministic is False, step
    assert dumped(monkeypatch)["settings"]["force_rerun"] is True


@pytest.mark.usefixtures("azureml_env")
def test_every_setting_a_step_needs_enters_as_a_component_input(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = dumped(monkeypatch, MIN_MAP_IMPROVEMENT="0.02")["jobs"]
    assert jobs["tag_model"]["inputs"]["min_map_improvement"] == 0.02
    reuse = dumped(
        monkeypatch, TRAIN_DATASET="azureml:pid-train:4", VAL_DATASET="azureml:pid-val:4", MIN_MAP_IMPROVEMENT="0.02"
    )["jobs"]
    assert reuse["register_model"]["inputs"]["train_dataset"] == "azureml:pid-train:4"
    assert reuse["register_model"]["inputs"]["val_dataset"] == "azureml:pid-val:4"
    steps = Path(__file__).resolve().parent.parent / "pipeline_steps"
    for step in COMPONENT_STEPS:
        source = (steps / f"{step}.py").read_text()
        for setting in ("MIN_MAP_IMPROVEMENT", "TRAIN_DATASET", "VAL_DATASET", "DATA_STORE_NAME"):
            assert f"settings.{setting}" not in source, f"{step} reads {setting} from the service's settings"


@pytest.mark.usefixtures("azureml_env")
def test_without_a_split_automl_gets_no_empty_validation_set(monkeypatch: pytest.MonkeyPatch) -> None:
    train = dumped(monkeypatch, USE_STRATIFIED_SPLIT="false")["jobs"]["train"]
    assert "validation_data" not in train or train["validation_data"] is None
    assert train["validation_data_size"] == 0.2


@pytest.mark.usefixtures("azureml_env")
def test_small_symbols_are_tiled_in_auto_and_sweep_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    from retrainer.assembly.automl_node import ACCEPTED_HYPERPARAMETERS, ACCEPTED_TRAINING_PARAMETERS

    auto = dumped(monkeypatch, TRAINING_TILE_GRID_SIZE="5x3")["jobs"]["train"]["training_parameters"]
    assert auto["tile_grid_size"] == "5x3" and auto["tile_overlap_ratio"] == 0.25
    assert (auto["min_size"], auto["max_size"]) == (1200, 1600)
    assert auto["model_name"] == "fasterrcnn_resnet50_fpn", "yolov5 does not support tiling"
    assert set(auto) <= ACCEPTED_TRAINING_PARAMETERS
    sweep = dumped(monkeypatch, AUTO_MODE="false")["jobs"]["train"]["search_space"]
    by_model = {entry["model_name"]["values"][0]: entry for entry in sweep}
    assert "tile_grid_size" not in by_model["yolov5"] and "min_size" not in by_model["yolov5"]
    assert by_model["fasterrcnn_resnet50_fpn"]["tile_grid_size"]["values"] == ["6x4"]
    assert by_model["fasterrcnn_resnet50_fpn"]["min_size"]["values"] == [1200]
    assert all(set(entry) <= ACCEPTED_HYPERPARAMETERS for entry in sweep)
    with pytest.raises(Exception, match="TRAINING_TILE_GRID_SIZE"):
        built(TRAINING_TILE_GRID_SIZE="six by four")


@pytest.mark.usefixtures("azureml_env")
def test_submissions_reference_the_release_components_and_upload_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes come from `ml_client.components.get` (public API) and the job references them by id."""
    from azure.ai.ml.entities import CommandComponent

    from retrainer.assembly.pipeline import component
    from retrainer.assembly.release import pipeline_release
    from retrainer.workspace.azureml import AzureMLPipelineRunner

    submitted: list[PipelineJob] = []
    fetched: list[tuple[str, str]] = []
    arm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/components"

    class Jobs:
        def create_or_update(self, job: PipelineJob, experiment_name: str) -> Any:
            submitted.append(job)
            return type("Created", (), {"name": "job-1"})()

    class Components:
        def get(self, name: str, version: str) -> CommandComponent:
            """What the service answers: the registered component, converted by the SDK's own REST model."""
            fetched.append((name, version))
            rest = component(name.removeprefix("pid_"))._to_rest_object()
            rest.id, rest.name = f"{arm}/{name}/versions/{version}", version
            fetched_component = CommandComponent._from_rest_object(rest)
            assert isinstance(fetched_component, CommandComponent)
            return fetched_component

        def create_or_update(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a submission registers nothing")

    class Refused:
        def create_or_update(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a submission registers nothing")

    class NoModels:
        def list(self, name: str) -> list[object]:
            return []

    parts = {"jobs": Jobs(), "environments": Refused(), "components": Components(), "models": NoModels()}
    client = type("Client", (), parts)()
    runner = AzureMLPipelineRunner(client, load_settings())
    assert runner.submit_pipeline("t") == "job-1"
    (job,) = submitted
    assert sorted(fetched) == sorted((f"pid_{step}", pipeline_release()) for step in COMPONENT_STEPS)
    rest_jobs = sent_pipeline(job).jobs
    assert rest_jobs is not None
    for step in COMPONENT_STEPS:
        assert rest_jobs[step]["componentId"] == f"{arm}/pid_{step}/versions/{pipeline_release()}"


def test_each_deployed_commit_is_its_own_release_and_every_component_uses_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from retrainer.assembly import release
    from retrainer.assembly.pipeline import component, environments
    from retrainer.assembly.release import PACKAGE_VERSION, pipeline_release

    root = Path(__file__).resolve().parent.parent
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"] == PACKAGE_VERSION
    release_file = tmp_path / "RELEASE"
    monkeypatch.setattr(release, "RELEASE_FILE", release_file)
    assert pipeline_release() == f"{PACKAGE_VERSION}-dev", "a checkout never claims a deployed release"
    release_file.write_text(f"{PACKAGE_VERSION}-1a2b3c4d\n")
    assert pipeline_release() == f"{PACKAGE_VERSION}-1a2b3c4d"
    for step in COMPONENT_STEPS:
        assert component(step).version == pipeline_release()
        runs_on = "pid-symbol-scoring" if step == "tag_model" else "pid-symbol-pipeline"
        assert component(step).environment == f"azureml:{runs_on}:{pipeline_release()}"
    assert environments()[0].version == pipeline_release()
    assert [env.version for env in environments()] == [pipeline_release()] * 2
    ignored = (root / ".amlignore").read_text().split()
    assert {".python_packages/", ".venv/", "node_modules/", "tests/", "devtools/", ".git/"} <= set(ignored)
    assert "retrainer/assembly/RELEASE" in (root / ".gitignore").read_text()
    shipped = not FuncIgnore((root / ".funcignore").read_text()).denies("retrainer/assembly/RELEASE")
    assert shipped, "the app submits the release it shipped"


@pytest.mark.usefixtures("azureml_env")
def test_a_warm_start_puts_the_checkpoint_run_on_the_automl_node_and_the_reason_on_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from retrainer.assembly.automl_node import WarmStartDecision
    from retrainer.assembly.pipeline import build_pipeline_job, validate_pipeline

    decision = WarmStartDecision("AutoML_abc_HD_3", "warm start from champion version 4 (AutoML run AutoML_abc_HD_3)")
    job = build_pipeline_job(load_settings(), run_label="t", warm_start=decision)
    validate_pipeline(job)
    document = job._to_dict()
    assert document["jobs"]["train"]["training_parameters"]["checkpoint_run_id"] == "AutoML_abc_HD_3"
    assert document["tags"]["warm_start"] == decision.reason
    cold = built()._to_dict()["jobs"]["train"]
    assert "checkpoint_run_id" not in (cold.get("training_parameters") or {})


@pytest.mark.usefixtures("azureml_env")
def test_the_azureml_runner_decides_the_warm_start_from_the_registry() -> None:
    from azure.ai.ml.entities import Model

    from retrainer.workspace.azureml import AzureMLPipelineRunner

    class Models:
        def list(self, name: str) -> list[Model]:
            tags = {"best_model": "true", "source_run": "AutoML_abc_HD_3", "class_ids": '["1"]'}
            return [Model(name=name, version="4", path="azureml://x", tags=tags)]

    class Client:
        models = Models()

    runner = AzureMLPipelineRunner(cast("MLClient", Client()), load_settings())
    decision = runner.warm_start()
    assert decision.checkpoint_run_id is None and "label map unknown" in decision.reason


def test_a_component_is_never_uploaded_from_a_folder_without_its_step_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function app ships the components' YAML but no step code: uploading from there would break the step."""
    import shutil

    from retrainer.assembly import pipeline

    shutil.copytree(pipeline.COMPONENTS, tmp_path / "shared" / "components")
    monkeypatch.setattr(pipeline, "COMPONENTS", tmp_path / "shared" / "components")
    with pytest.raises(FileNotFoundError, match="retrain register-components"):
        pipeline.component("tag_model")
    (tmp_path / "pipeline_steps").mkdir()
    (tmp_path / "pipeline_steps" / "tag_model.py").write_text("")
    assert pipeline.component("tag_model").name == "pid_tag_model"


@pytest.mark.usefixtures("azureml_env")
def test_the_deciding_step_gets_the_label_map_only_where_the_datastore_has_one() -> None:
    from retrainer.assembly.pipeline import build_pipeline_job, validate_pipeline

    with_map = build_pipeline_job(load_settings(), with_label_map=True)
    validate_pipeline(with_map)
    tag = with_map._to_dict()["jobs"]["tag_model"]["inputs"]
    assert tag["label_map_path"] == {
        "type": "uri_file",
        "path": "azureml://datastores/retraining_data/paths/data/label_map.json",
    }
    assert "label_map_path" not in built()._to_dict()["jobs"]["tag_model"]["inputs"], (
        "an absent file would fail the job"
    )


def test_the_local_runner_hands_the_label_map_to_the_deciding_step_when_it_was_downloaded(tmp_path: Path) -> None:
    from retrainer.settings import Settings
    from retrainer.workspace.local_runner import step_commands

    assert "--label_map_path" not in step_commands(tmp_path, Settings())["tag_model"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "label_map.json").write_text("{}")
    command = step_commands(tmp_path, Settings())["tag_model"]
    assert command[command.index("--label_map_path") + 1] == str(tmp_path / "data" / "label_map.json")


def test_the_local_trainer_validates_on_the_split_written_after_the_commands_are_built(tmp_path: Path) -> None:
    """The commands are built before any step runs: an earlier step's output is passed though it does not exist yet."""
    from retrainer.settings import Settings
    from retrainer.workspace.local_runner import step_commands

    command = step_commands(tmp_path, Settings())["train"]
    assert not (tmp_path / "outputs").exists()
    assert command[command.index("--val_data") + 1] == str(tmp_path / "outputs" / "data_split" / "val_output_path")
