"""Steps 5 and 6 against the local MLflow registry with real trained models, and the Azure ML side offline."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from azure.ai.ml.entities import Model

from pipeline_steps import register_model, tag_model
from pipeline_steps.register_model import ModelInputError, read_training_metrics
from pipeline_steps.tag_model import choose_best
from retrainer.promotion import decide_promotion
from retrainer.settings import get_settings
from retrainer.workspace import ModelVersion
from retrainer.workspace.azureml import AzureMLModelRegistry
from retrainer.workspace.local import LocalModelRegistry

NAME = "pid-symbol-detector"
SAMPLES = Path(__file__).resolve().parent.parent / "sample_artifacts"


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(tmp_path / "workspace"))
    for variable in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "MIN_MAP_IMPROVEMENT",
        "TRAIN_DATASET",
        "VAL_DATASET",
    ):
        monkeypatch.delenv(variable, raising=False)
    get_settings.cache_clear()
    yield tmp_path / "workspace"
    get_settings.cache_clear()


def model_with_score(trained_model: Path, folder: Path, score: float) -> Path:
    """A copy of a real trained model whose recorded validation mAP is `score`."""
    shutil.copytree(trained_model, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["mean_average_precision"] = score
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def register_and_tag(trained_model: Path, tmp_path: Path, score: float, val_data: str | None = None) -> dict:
    run = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    model = model_with_score(trained_model, run / "model", score)
    assets = None
    if val_data:
        assets = run / "assets"
        assets.mkdir()
        (assets / "data_assets.json").write_text(
            json.dumps(
                {
                    "train": {"name": "pid-symbols-train", "version": "1", "uri": "file:///unused"},
                    "val": {"name": "pid-symbols-val", "version": val_data[0], "uri": val_data[1]},
                }
            )
        )
    args = ["--model-base-name", NAME, "--model-input-path", str(model), "--model-metadata-path", str(run / "meta")]
    assert register_model.main([*args, *(["--data-assets-path", str(assets)] if assets else [])]) == 0
    assert (
        tag_model.main(["--model-metadata-path", str(run / "meta"), "--best-model-metadata-path", str(run / "best")])
        == 0
    )
    return json.loads((run / "best" / "best_model_metadata.json").read_text())


def best_versions(workspace_root: Path) -> list[str]:
    return [v.version for v in LocalModelRegistry(workspace_root).model_versions(NAME) if v.is_best]


def test_better_worse_and_equal_scores_give_the_right_best_model(
    trained_model: Path, tmp_path: Path, local_env: Path
) -> None:
    first = register_and_tag(trained_model, tmp_path, 0.50)
    assert first["promoted"] and first["best_version"] == "1" and first["reason"] == "no model was tagged best yet"
    better = register_and_tag(trained_model, tmp_path, 0.70)
    assert better["promoted"] and better["best_version"] == "2" and better["previous_best_version"] == "1"
    worse = register_and_tag(trained_model, tmp_path, 0.60)
    assert not worse["promoted"] and worse["best_version"] == "2" and worse["chosen_version"] == "2"
    equal = register_and_tag(trained_model, tmp_path, 0.70)
    assert not equal["promoted"] and equal["best_version"] == "2" and "does not beat" in equal["reason"]
    assert best_versions(local_env) == ["2"]
    versions = LocalModelRegistry(local_env).model_versions(NAME)
    assert [v.version for v in versions] == ["1", "2", "3", "4"]
    assert versions[1].tags["mean_average_precision"] == "0.700000" and versions[1].tags["source_run"]


def test_min_improvement_is_respected(
    trained_model: Path, tmp_path: Path, local_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIN_MAP_IMPROVEMENT", "0.05")
    register_and_tag(trained_model, tmp_path, 0.50)
    assert not register_and_tag(trained_model, tmp_path, 0.54)["promoted"]
    assert register_and_tag(trained_model, tmp_path, 0.56)["promoted"]


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
    barrier = threading.Barrier(len(versions))
    errors: list[BaseException] = []

    def tag(version: ModelVersion) -> None:
        try:
            barrier.wait()
            choose_best(LocalModelRegistry(local_env), NAME, version.version, 0.0, rescore=None)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=tag, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert best_versions(local_env) == [versions[scores.index(max(scores))].version]


def test_models_validated_on_different_data_are_rescored_on_the_newcomers_set(
    trained_model: Path, training_sets: tuple[Path, Path], tmp_path: Path, local_env: Path
) -> None:
    val_uri = training_sets[1].resolve().as_uri()
    register_and_tag(trained_model, tmp_path, 0.30, val_data=("1", val_uri))
    # Same weights, so on the same data the two score alike, whatever their training runs reported.
    decision = register_and_tag(trained_model, tmp_path, 0.95, val_data=("2", val_uri))
    assert decision["comparison"]["rescored"] and decision["comparison"]["rescored_on"] == "pid-symbols-val:2"
    assert "different data" in decision["comparison"]["note"]
    assert decision["candidate_score"] == pytest.approx(decision["previous_best_score"])
    assert not decision["promoted"] and decision["best_version"] == "1"
    assert decision["candidate_per_class"] == decision["previous_per_class"] != {}, "per class, on the same data"
    report = Path(unquote(urlsplit(decision["candidate_report"]).path)).read_text()
    assert 'id="champion-challenger"' in report and "the champion stays" in report


def test_an_incumbent_from_an_older_detector_architecture_is_compared_on_recorded_scores(
    trained_model: Path, training_sets: tuple[Path, Path], tmp_path: Path, local_env: Path
) -> None:
    older = tmp_path / "older-model"
    shutil.copytree(trained_model, older)
    config = json.loads((older / "artifacts" / "config.json").read_text())
    (older / "artifacts" / "config.json").write_text(json.dumps({**config, "architecture": "fcos-symbol"}))
    val_uri = training_sets[1].resolve().as_uri()
    register_and_tag(older, tmp_path, 0.30, val_data=("1", val_uri))
    decision = register_and_tag(trained_model, tmp_path, 0.95, val_data=("2", val_uri))
    assert not decision["comparison"]["rescored"]
    assert "architecture 'fcos-symbol'" in decision["comparison"]["rescore_skipped"]
    assert decision["candidate_score"] == 0.95 and decision["previous_best_score"] == 0.30
    assert decision["promoted"] and decision["best_version"] == "2"


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


def test_automl_style_model_reads_metrics_from_its_tracked_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLmodel sample is AutoML's best_model layout: metrics live on the run its run_id names."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'tracking.db'}")
    with mlflow.start_run() as run:
        mlflow.log_metrics({"mean_average_precision": 0.91, "precision": 0.88, "recall": 0.93})
    model = tmp_path / "best_model"
    model.mkdir()
    text = (SAMPLES / "register" / "MLmodel.sample").read_text().replace("<RUN_ID>", run.info.run_id)
    (model / "MLmodel").write_text(text)
    metrics, source = read_training_metrics(model)
    assert metrics == {"mean_average_precision": 0.91, "precision": 0.88, "recall": 0.93}
    assert source == run.info.run_id


def test_automl_metrics_are_the_saved_epochs_not_the_last_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AutoML saves the epoch with the best validation mAP; the run's summary holds the last epoch's values."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'tracking.db'}")
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


def test_promotion_policy_keeps_the_incumbent_on_a_tie() -> None:
    assert decide_promotion(0.8, None, 0.0).promote
    assert not decide_promotion(0.8, 0.8, 0.0).promote
    assert decide_promotion(0.81, 0.8, 0.0).promote
    assert not decide_promotion(0.81, 0.8, 0.02).promote


class FakeModelOperations:
    """Stands in for `MLClient.models`' network calls, storing the SDK's own Model entities."""

    def __init__(self) -> None:
        self.stored: dict[str, Model] = {}

    def create_or_update(self, model: Model) -> Model:
        version = model.version or str(len(self.stored) + 1)
        stored = Model(
            name=model.name, version=version, path="azureml://x", type=model.type, tags=dict(model.tags or {})
        )
        self.stored[version] = stored
        return stored

    def list(self, name: str) -> list[Model]:
        return [m for m in self.stored.values() if m.name == name]

    def get(self, name: str, version: str) -> Model:
        model = self.stored[version]
        return Model(name=model.name, version=model.version, path=model.path, type=model.type, tags=dict(model.tags))


class FakeMLClient:
    def __init__(self) -> None:
        self.models = FakeModelOperations()


def test_azureml_registry_registers_mlflow_models_and_repairs_two_best_tags(trained_model: Path) -> None:
    client = FakeMLClient()
    workspace = AzureMLModelRegistry(client)
    for score in (0.6, 0.9, 0.7):
        workspace.register_model(NAME, trained_model, description="", tags={"mean_average_precision": str(score)})
    sent = client.models.stored["1"]
    assert sent.type == "mlflow_model"
    # Two tag steps raced on Azure ML and both left best_model=true:
    workspace.set_model_tags(NAME, "1", {"best_model": "true"})
    workspace.set_model_tags(NAME, "3", {"best_model": "true"})
    record = choose_best(workspace, NAME, "2", 0.0, rescore=None)
    assert record.repaired_best_tags_on_versions == ["1"] and record.promoted
    assert [v.version for v in workspace.model_versions(NAME) if v.is_best] == ["2"]
    assert workspace.model_versions(NAME)[0].uri == f"azureml:{NAME}:1"
