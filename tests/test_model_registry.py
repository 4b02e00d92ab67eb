"""Steps 5 and 6 against the local MLflow registry with real trained models, and the Azure ML side offline."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from azure.ai.ml.entities import Model

from pipeline_steps import register_model, tag_model
from pipeline_steps.register_model import ModelInputError, read_training_metrics
from pipeline_steps.tag_model import choose_best
from shared.champion.tags import rightful_champion
from shared.contracts import AUTOML_IMAGE_TAG, AUTOML_MODEL_NAME_TAG, HoldoutManifest, holdout_info
from shared.promotion import PromotionRecord
from shared.records import ModelVersion
from shared.registry.local import LocalModelRegistry
from tests.fakes import FakeMLClient, azureml_registry
from tests.helpers import at_once

NAME = "pid-symbol-detector"
SAMPLES = Path(__file__).resolve().parent.parent / "sample_artifacts"


@pytest.fixture
def local_env(mlflow_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("MIN_MAP_IMPROVEMENT", "TRAIN_DATASET", "VAL_DATASET"):
        monkeypatch.delenv(variable, raising=False)
    return mlflow_workspace


def model_with_score(trained_model: Path, folder: Path, score: float) -> Path:
    """A copy of a real trained model whose recorded validation mAP is `score`."""
    shutil.copytree(trained_model, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["mean_average_precision"] = score
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def register_and_tag(
    trained_model: Path, tmp_path: Path, score: float, holdout: Path | None = None, tag_args: tuple[str, ...] = ()
) -> dict:
    run = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    model = model_with_score(trained_model, run / "model", score)
    args = ["--model-base-name", NAME, "--model-input-path", str(model), "--model-metadata-path", str(run / "meta")]
    assert register_model.main(args) == 0
    holdout_args = (
        ["--holdout-data-path", str(holdout), "--bootstrap-resamples", "200", "--min-holdout-images", "2"]
        if holdout
        else []
    )
    tag_args = ("--model-metadata-path", str(run / "meta"), "--best-model-metadata-path", str(run / "best"), *tag_args)
    assert tag_model.main([*tag_args, *holdout_args]) == 0
    return json.loads((run / "best" / "best_model_metadata.json").read_text())


def holdout_of(folder: Path, tmp_path: Path) -> Path:
    """A holdout MLTable as the split writes it: the records and the holdout's version beside them."""
    holdout = tmp_path / "holdout"
    shutil.copytree(folder, holdout)
    HoldoutManifest(holdout=holdout_info(3, [p.name for p in holdout.glob("*")])).write(holdout)
    return holdout


def best_versions(workspace_root: Path) -> list[str]:
    return [v.version for v in LocalModelRegistry(workspace_root).model_versions(NAME) if v.is_best]


def test_better_worse_and_equal_scores_give_the_right_best_model(
    trained_model: Path, tmp_path: Path, local_env: Path
) -> None:
    first = register_and_tag(trained_model, tmp_path, 0.50)
    assert first["promoted"] and first["best_version"] == "1" and first["reason"] == "no model was tagged best yet"
    better = register_and_tag(trained_model, tmp_path, 0.70)
    assert better["promoted"] and better["best_version"] == "2" and better["champion_version"] == "1"
    worse = register_and_tag(trained_model, tmp_path, 0.60)
    assert not worse["promoted"] and worse["best_version"] == "2" and worse["chosen_version"] == "2"
    equal = register_and_tag(trained_model, tmp_path, 0.70)
    assert not equal["promoted"] and equal["best_version"] == "2" and "not better by more than 0" in equal["reason"]
    assert best_versions(local_env) == ["2"]
    versions = LocalModelRegistry(local_env).model_versions(NAME)
    assert [v.version for v in versions] == ["1", "2", "3", "4"]
    assert versions[1].tags["mean_average_precision"] == "0.700000" and versions[1].tags["source_run"]


def test_min_improvement_is_respected(trained_model: Path, tmp_path: Path, local_env: Path) -> None:
    margin = ("--min-map-improvement", "0.05")
    register_and_tag(trained_model, tmp_path, 0.50, tag_args=margin)
    assert not register_and_tag(trained_model, tmp_path, 0.54, tag_args=margin)["promoted"]
    assert register_and_tag(trained_model, tmp_path, 0.56, tag_args=margin)["promoted"]


def test_tagging_twice_changes_nothing(trained_model: Path, tmp_path: Path, local_env: Path) -> None:
    register_and_tag(trained_model, tmp_path, 0.5)
    run = tmp_path / "run-0"
    before = [(v.version, v.tags) for v in LocalModelRegistry(local_env).model_versions(NAME)]
    assert (
        tag_model.main(
            ["--model-metadata-path", str(run / "meta"), "--best-model-metadata-path", str(tmp_path / "again")]
        )
        == 0
    )
    again = json.loads((tmp_path / "again" / "best_model_metadata.json").read_text())
    assert again["reason"] == "already the best model; nothing to change" and not again["promoted"]
    assert [(v.version, v.tags) for v in LocalModelRegistry(local_env).model_versions(NAME)] == before


def test_racing_tag_steps_leave_exactly_one_best(trained_model: Path, tmp_path: Path, local_env: Path) -> None:
    workspace = LocalModelRegistry(local_env)
    scores = [0.41, 0.83, 0.55, 0.62, 0.79, 0.47]
    versions = [
        workspace.register_model(
            NAME,
            model_with_score(trained_model, tmp_path / f"m{i}", s),
            description="",
            tags={"mean_average_precision": str(s), "val_data": "pid-symbols-val:1"},
        )
        for i, s in enumerate(scores)
    ]
    outcomes = at_once(
        [
            functools.partial(choose_best, LocalModelRegistry(local_env), NAME, v.version, 0.0, scorer=None)
            for v in versions
        ]
    )
    records = [o for o in outcomes if isinstance(o, PromotionRecord)]
    assert len(records) == len(versions), outcomes
    (best,) = best_versions(local_env)
    applied = [r for r in records if r.promoted]
    assert [r.challenger_version for r in applied] == [best], "one decision was applied: the first to swap"
    stood_down = [r for r in records if not r.promoted]
    assert len(stood_down) == len(versions) - 1
    for record in stood_down:  # each compared against no champion; another run's swap came first
        assert record.not_applied == f"another run's tag step made version {best} the champion while this run scored"
        assert record.best_version == best


def test_both_models_are_scored_on_the_same_holdout_and_the_same_weights_never_promote(
    trained_model: Path, training_sets: tuple[Path, Path], tmp_path: Path, local_env: Path
) -> None:
    holdout = holdout_of(training_sets[1], tmp_path)
    first = register_and_tag(trained_model, tmp_path, 0.30, holdout=holdout)
    assert first["promoted"] and first["comparison"]["holdout"]["assignment_version"] == 3
    # Same weights, whatever their training runs reported: on the same holdout they score alike.
    decision = register_and_tag(trained_model, tmp_path, 0.95, holdout=holdout)
    record = PromotionRecord.model_validate(decision)
    assert record.challenger_score == record.champion_score != 0.95, "holdout scores, not recorded ones"
    assert record.comparison.interval is not None
    assert (record.comparison.interval.low, record.comparison.interval.high) == (0.0, 0.0)
    assert not record.promoted and record.best_version == "1"
    assert record.comparison.holdout == HoldoutManifest.read(holdout).holdout
    assert record.challenger_per_class == record.champion_per_class != {}, "per class, on the same data"
    report = Path(unquote(urlsplit(decision["challenger_report"]).path)).read_text()
    assert 'id="champion-challenger"' in report and "+0.000 (95% interval +0.000 to +0.000)" in report
    assert "which neither model trained on" in report


def test_an_incumbent_from_an_older_detector_architecture_is_compared_on_recorded_scores(
    trained_model: Path, training_sets: tuple[Path, Path], tmp_path: Path, local_env: Path
) -> None:
    older = tmp_path / "older-model"
    shutil.copytree(trained_model, older)
    config = json.loads((older / "artifacts" / "config.json").read_text())
    (older / "artifacts" / "config.json").write_text(json.dumps({**config, "architecture": "fcos-symbol"}))
    holdout = holdout_of(training_sets[1], tmp_path)
    register_and_tag(older, tmp_path, 0.30)
    decision = register_and_tag(trained_model, tmp_path, 0.95, holdout=holdout)
    assert "architecture 'fcos-symbol'" in decision["comparison"]["not_rescored"]
    assert decision["challenger_score"] == 0.95 and decision["champion_score"] == 0.30
    assert decision["promoted"] and decision["best_version"] == "2"


FIGURE_TAGS = {"mean_average_precision", "coco_map", "precision", "recall", register_model.PER_CLASS_TAG}


@pytest.mark.slow  # trains
def test_a_model_trained_without_validation_has_no_figures_and_is_listed_as_not_validated(
    training_sets: tuple[Path, Path], tmp_path: Path, local_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline_steps import train
    from retrainer import cli
    from shared.contracts import RegisteredModel, TrainingMetrics

    blind = tmp_path / "blind"
    assert train.main(["--train-data", str(training_sets[0]), "--output", str(blind), "--epochs", "1"]) == 0
    assert "not validated: no validation sheets" in capsys.readouterr().out
    metrics = TrainingMetrics.read(blind)
    assert metrics.val_images == 0 and metrics.per_class == {}
    assert (metrics.mean_average_precision, metrics.coco_map, metrics.precision, metrics.recall) == (None,) * 4
    older = tmp_path / "older"  # an older trainer wrote 0.0 figures for a model it could not validate
    shutil.copytree(blind, older)
    (older / "metrics.json").write_text(
        json.dumps(
            {
                **json.loads((blind / "metrics.json").read_text()),
                "mean_average_precision": 0.0,
                "precision": 0.0,
                "recall": 0.0,
                "coco_map": 0.0,
            }
        )
    )
    for index, model in enumerate((blind, older)):
        meta = tmp_path / f"meta{index}"
        args = ["--model-base-name", NAME, "--model-input-path", str(model), "--model-metadata-path", str(meta)]
        assert register_model.main(args) == 0
        assert "not validated" in capsys.readouterr().out
        registered = RegisteredModel.read(meta)
        assert (registered.mean_average_precision, registered.val_images, registered.per_class) == (None, 0, {})
    versions = LocalModelRegistry(local_env).model_versions(NAME)
    assert [(v.tags["val_images"], FIGURE_TAGS & set(v.tags), v.validated) for v in versions] == [
        ("0", set(), False)
    ] * 2
    assert cli.main(["models"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("not validated") == 2 and "0.000" not in listed


def test_bad_model_inputs_are_clear_errors(trained_model: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelInputError, match="no MLmodel file"):
        read_training_metrics(tmp_path / "empty")
    broken = model_with_score(trained_model, tmp_path / "nan", float("nan"))
    with pytest.raises(ModelInputError, match="'mean_average_precision' is not a finite number"):
        read_training_metrics(broken)
    metrics = json.loads((broken / "metrics.json").read_text())
    metrics["mean_average_precision"] = 0.5
    del metrics["recall"]
    (broken / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ModelInputError, match="'recall' is missing"):
        read_training_metrics(broken)


@pytest.mark.usefixtures("mlflow_tracking")
def test_automl_style_model_reads_metrics_from_its_tracked_run(tmp_path: Path) -> None:
    """The MLmodel sample is AutoML's best_model layout: metrics live on the run its run_id names."""
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_metrics({"mean_average_precision": 0.91, "precision": 0.88, "recall": 0.93})
    model = tmp_path / "best_model"
    model.mkdir()
    text = (SAMPLES / "register" / "MLmodel.sample").read_text().replace("<RUN_ID>", run.info.run_id)
    (model / "MLmodel").write_text(text)
    metrics, source = read_training_metrics(model)
    assert metrics == {"mean_average_precision": 0.91, "precision": 0.88, "recall": 0.93}
    assert source == run.info.run_id


@pytest.mark.usefixtures("mlflow_tracking")
def test_automl_metrics_are_the_saved_epochs_not_the_last_logged(tmp_path: Path) -> None:
    """AutoML saves the epoch with the best validation mAP; the run's summary holds the last epoch's values."""
    import mlflow

    epochs = [(0.50, 0.60, 0.70), (0.82, 0.85, 0.80), (0.74, 0.90, 0.66)]  # mAP, precision, recall
    with mlflow.start_run() as run:
        for step, (score, precision, recall) in enumerate(epochs):
            mlflow.log_metrics({"mean_average_precision": score, "precision": precision, "recall": recall}, step=step)
    model = tmp_path / "best_model"
    model.mkdir()
    text = (SAMPLES / "register" / "MLmodel.sample").read_text().replace("<RUN_ID>", run.info.run_id)
    (model / "MLmodel").write_text(text)
    metrics, _ = read_training_metrics(model)
    assert metrics == {"mean_average_precision": 0.82, "precision": 0.85, "recall": 0.80}


@pytest.mark.usefixtures("mlflow_tracking")
def test_an_automl_model_is_tagged_with_the_model_it_was_trained_as_and_a_local_one_is_not(
    trained_model: Path, tmp_path: Path
) -> None:
    """AutoML writes the trial's model_name into the MLmodel's metadata (base_model_name); warm start matches it."""
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_metrics({"mean_average_precision": 0.91, "precision": 0.88, "recall": 0.93})
    automl = tmp_path / "best_model"
    automl.mkdir()
    text = (SAMPLES / "register" / "MLmodel.sample").read_text().replace("<RUN_ID>", run.info.run_id)
    (automl / "MLmodel").write_text(text.replace("fasterrcnn_resnet50_fpn", "yolov5"))
    client = FakeMLClient()
    registry = azureml_registry(client)
    register_model.register(registry, NAME, automl, {})
    register_model.register(registry, NAME, trained_model, {})
    automl_tags, local_tags = client.models.stored_tags(NAME, "1"), client.models.stored_tags(NAME, "2")
    assert automl_tags[AUTOML_MODEL_NAME_TAG] == "yolov5" and automl_tags["source_run"] == run.info.run_id
    assert AUTOML_MODEL_NAME_TAG not in local_tags and local_tags["source_run"] == "local-trainer"
    # The AutoML release whose code scores it: the training image AutoML records in the MLmodel.
    assert automl_tags[AUTOML_IMAGE_TAG] == "mcr.microsoft.com/azureml/curated/ai-ml-automl-dnn-vision-gpu:52"
    assert AUTOML_IMAGE_TAG not in local_tags


def test_azureml_registry_registers_mlflow_models_and_repairs_two_best_tags(trained_model: Path) -> None:
    client = FakeMLClient()
    workspace = azureml_registry(client)
    for score in (0.6, 0.9, 0.7):
        workspace.register_model(NAME, trained_model, description="", tags={"mean_average_precision": str(score)})
    sent = client.models.stored[(NAME, "1")]
    assert sent.type == "mlflow_model"
    # Two tag steps raced on Azure ML and both left best_model=true:
    workspace.set_model_tags(NAME, "1", {"best_model": "true"})
    workspace.set_model_tags(NAME, "3", {"best_model": "true"})
    record = choose_best(workspace, NAME, "2", 0.0, scorer=None)
    assert record.champion_version == "3" and record.promoted, "the race settled on the higher recorded score"
    assert [v.version for v in workspace.model_versions(NAME) if v.is_best] == ["2"]
    assert workspace.model_versions(NAME)[0].uri == f"azureml:{NAME}:1"


def test_a_recorded_score_of_zero_outranks_a_missing_one_when_two_versions_claim_best() -> None:
    unscored = ModelVersion(NAME, "1", {"best_model": "true"}, f"azureml:{NAME}:1")
    zero = ModelVersion(NAME, "2", {"best_model": "true", "mean_average_precision": "0.0"}, f"azureml:{NAME}:2")
    assert rightful_champion([unscored, zero]) == zero


def test_tagging_the_champion_again_keeps_its_recorded_score_of_zero(trained_model: Path) -> None:
    workspace = azureml_registry(FakeMLClient())
    workspace.register_model(NAME, trained_model, description="", tags={"mean_average_precision": "0.0"})
    assert choose_best(workspace, NAME, "1", 0.0, scorer=None).promoted
    again = choose_best(workspace, NAME, "1", 0.0, scorer=None)
    assert again.reason == "already the best model; nothing to change"
    assert again.challenger_score == 0.0 and again.champion_score == 0.0


def test_azureml_documents_are_immutable_custom_model_versions_and_the_second_writer_loses() -> None:
    client = FakeMLClient()
    registry = azureml_registry(client)
    assert registry.latest_versioned_document("pid-symbols-split-assignment") is None
    assert registry.create_document("pid-symbols-split-assignment", "1", b'{"version": 1}')
    assert not registry.create_document("pid-symbols-split-assignment", "1", b'{"version": 1, "other": true}')
    assert registry.create_document("pid-symbols-split-assignment", "2", b'{"version": 2}')
    assert registry.latest_versioned_document("pid-symbols-split-assignment") == (2, b'{"version": 2}')
    sent = client.models.stored[("pid-symbols-split-assignment", "1")]
    assert sent.type == "custom_model" and client.models.stored_tags("pid-symbols-split-assignment", "1")["sha256"]
    assert Model._load(data=sent._to_dict()).type == "custom_model", "the SDK's own schema accepts it"


@pytest.mark.slow  # makes a new MLflow store
def test_a_local_version_whose_files_are_gone_is_a_file_not_found_as_on_azureml(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    registry = LocalModelRegistry(tmp_path / "workspace")
    version = registry.register_model(NAME, model, description="a model", tags={})
    assert (registry.local_model_path(version, tmp_path / "scratch") / "MLmodel").is_file()
    shutil.rmtree(version.uri)
    with pytest.raises(FileNotFoundError, match=f"^model {NAME}:1 has no MLmodel file at "):
        registry.local_model_path(version, tmp_path / "scratch")


@pytest.mark.slow  # six processes each import MLflow
def test_processes_opening_a_new_local_registry_at_once_all_succeed(tmp_path: Path) -> None:
    """MLflow makes a SQLite registry's tables on first use; `retrain serve` and a run's steps may do so together."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from shared.registry.local import LocalModelRegistry; "
        "LocalModelRegistry(Path(sys.argv[1])).model_versions('m')"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    root = Path(__file__).resolve().parents[1]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], cwd=root, env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    failures = [p.communicate(timeout=300)[1][-300:] for p in processes if p.wait(timeout=300) != 0]
    assert failures == []
