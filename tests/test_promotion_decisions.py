"""The deciding step: the per-class guard, and the step under attack (damaged scores, a diverged challenger,
a deleted champion, a tiny holdout).

Each case ends in a decision with its reason and a record the service can read back, never a traceback.
Models are the rehearsal's stand-ins (MLflow models from code answering from a table), registered in
the local MLflow registry by the real register step; the holdout comes from the real data steps.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from devtools import step_rehearsal
from pipeline_steps import register_model, tag_model
from pipeline_steps.comparison_report import class_guard_chart
from retrainer.assembly.graph import TRAIN
from retrainer.settings import load_settings
from retrainer.workspace.local_runner import run_folders
from shared.contracts import HoldoutManifest
from shared.promotion import PROMOTION_RECORD_FILE, PromotionRecord
from shared.registry.local import LocalModelRegistry

NAME = "pid-symbol-detector"


#: Each step's folders in the prepared run (`local_runner.run_folders`).
Folders = dict[str, dict[str, Path]]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Folders:
    """The sample sheets through the steps before training, once, with the rehearsal's (the local runner's) commands."""
    work = tmp_path_factory.mktemp("faults")
    settings = load_settings(WORKSPACE_BACKEND="local", LOCAL_WORKSPACE_DIR=work / "ws0", HOLDOUT_FRACTION=0.4)
    commands, logs = step_rehearsal.rehearsal_commands(work, settings), work / "logs"
    logs.mkdir()
    for step in list(commands)[: list(commands).index(TRAIN)]:
        step_rehearsal.run_step(step, commands[step], step_rehearsal.step_env(work / "ws0"), logs)
    return run_folders(work)


def answers(prepared: Folders, recall: float) -> dict[str, list[dict]]:
    images = step_rehearsal.SAMPLES / "images"
    aggregated = prepared["data_aggregation"]["output_path"]
    return step_rehearsal.stand_in_answers(aggregated, recall, images, step_rehearsal.IMAGES_PREFIX)


def register(prepared: Folders, tmp_path: Path, label: str, table: dict[str, list[dict]]) -> Path:
    model = step_rehearsal.save_stand_in(tmp_path / f"model-{label}", table, validation_map=0.5)
    meta = tmp_path / f"meta-{label}"
    assert register_model.main(["--model-input-path", str(model), "--model-metadata-path", str(meta)]) == 0
    return meta


def tag(prepared: Folders, meta: Path, *extra: str, holdout: bool = True) -> PromotionRecord:
    out = meta.parent / f"best-{meta.name}"
    arguments = ["--model-metadata-path", str(meta), "--best-model-metadata-path", str(out)]
    if holdout:
        arguments += [
            "--holdout-data-path",
            str(prepared["data_split"]["holdout_output_path"]),
            "--holdout-images-path",
            str(step_rehearsal.SAMPLES / "images"),
            "--images-string-absolute-path",
            step_rehearsal.IMAGES_PREFIX,
            "--bootstrap-resamples",
            "200",
            "--min-holdout-images",
            "3",
        ]
    assert tag_model.main([*arguments, *extra]) == 0
    return PromotionRecord.from_json((out / PROMOTION_RECORD_FILE).read_text())


def champion(prepared: Folders, tmp_path: Path) -> PromotionRecord:
    first = tag(prepared, register(prepared, tmp_path, "champion", answers(prepared, 0.9)))
    assert first.promoted and first.best_version == "1"
    return first


def best(mlflow_workspace: Path) -> list[str]:
    return [v.version for v in LocalModelRegistry(mlflow_workspace).model_versions(NAME) if v.is_best]


def test_a_challenger_answering_nan_keeps_the_champion(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path
) -> None:
    champion(prepared, tmp_path)
    diverged = {
        digest: [{**box, "score": math.nan} for box in boxes] for digest, boxes in answers(prepared, 1.0).items()
    }
    record = tag(prepared, register(prepared, tmp_path, "diverged", diverged))
    assert not record.promoted and best(mlflow_workspace) == ["1"]
    assert "the challenger could not be scored" in record.reason and "non-finite" in record.reason
    assert "the champion stays" in record.reason


@pytest.mark.parametrize("damage", ["inf", "nan", "-inf", "not a number"])
def test_a_damaged_challenger_score_never_promotes_and_the_record_reads_back(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path, damage: str
) -> None:
    champion(prepared, tmp_path)
    meta = register(prepared, tmp_path, "damaged", answers(prepared, 1.0))
    LocalModelRegistry(mlflow_workspace).set_model_tags(NAME, "2", {tag_model.SCORE_TAG: damage})
    record = tag(prepared, meta, holdout=False)  # recorded scores decide
    assert not record.promoted and best(mlflow_workspace) == ["1"]
    assert "not a finite number" in record.reason and "the champion stays" in record.reason
    assert math.isnan(record.challenger_score)
    stored = (meta.parent / f"best-{meta.name}" / PROMOTION_RECORD_FILE).read_text()
    assert json.loads(stored)["challenger_score"] == "NaN", "readable JSON, never null"


def test_a_damaged_champion_score_is_replaced_by_holdout_scores_or_by_the_challenger(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path
) -> None:
    champion(prepared, tmp_path)
    LocalModelRegistry(mlflow_workspace).set_model_tags(NAME, "1", {tag_model.SCORE_TAG: "inf"})
    better = tag(prepared, register(prepared, tmp_path, "better", answers(prepared, 1.0)))
    assert better.comparison.interval is not None, "on the holdout the recorded score does not matter"
    LocalModelRegistry(mlflow_workspace).set_model_tags(NAME, better.best_version or "", {tag_model.SCORE_TAG: "inf"})
    record = tag(prepared, register(prepared, tmp_path, "third", answers(prepared, 0.6)), holdout=False)
    assert record.promoted and "missing or not a finite number ('inf')" in record.reason
    assert record.champion_score is None


@pytest.mark.parametrize("champion_damage", ["oops", None, "-inf"])
@pytest.mark.parametrize("challenger_damage", ["nan", "inf"])
def test_a_non_finite_challenger_never_replaces_a_champion_without_a_finite_score(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path, champion_damage: str | None, challenger_damage: str
) -> None:
    champion(prepared, tmp_path)
    registry = LocalModelRegistry(mlflow_workspace)
    registry.set_model_tags(NAME, "1", {tag_model.SCORE_TAG: champion_damage or ""})
    meta = register(prepared, tmp_path, "damaged", answers(prepared, 1.0))
    registry.set_model_tags(NAME, "2", {tag_model.SCORE_TAG: challenger_damage})
    record = tag(prepared, meta, holdout=False)  # recorded scores decide, and neither is a finite number
    assert not record.promoted and best(mlflow_workspace) == ["1"]
    assert "the challenger's score is not a finite number" in record.reason and "the champion stays" in record.reason


def test_a_deleted_champion_is_replaced_not_a_failure_of_every_later_run(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path
) -> None:
    champion(prepared, tmp_path)
    (version,) = [v for v in LocalModelRegistry(mlflow_workspace).model_versions(NAME) if v.is_best]
    shutil.rmtree(version.uri)
    record = tag(prepared, register(prepared, tmp_path, "next", answers(prepared, 0.6)))
    assert record.promoted and best(mlflow_workspace) == ["2"]
    assert "the champion's model is gone" in record.reason and "no model files" in record.reason


def test_too_small_a_holdout_keeps_the_champion_and_says_so(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path
) -> None:
    champion(prepared, tmp_path)
    images = HoldoutManifest.read(prepared["data_split"]["holdout_output_path"]).holdout.images
    record = tag(
        prepared,
        register(prepared, tmp_path, "better", answers(prepared, 1.0)),
        "--min-holdout-images",
        str(images + 1),
    )
    assert not record.promoted and best(mlflow_workspace) == ["1"]
    assert f"only {images} holdout images were scored, fewer than the {images + 1}" in record.reason
    assert record.comparison.interval is not None, "the comparison is still recorded"


def test_the_first_model_is_promoted_whatever_the_holdout_size(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path
) -> None:
    meta = register(prepared, tmp_path, "first", answers(prepared, 0.9))
    assert tag(prepared, meta, "--min-holdout-images", "1000").promoted


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--bootstrap-resamples", "5"),
        ("--confidence-level", "1.5"),
        ("--max-holdout-images", "0"),
        ("--scoring-budget-minutes", "-1"),
        ("--min-holdout-images", "0"),
        ("--min-map-improvement", "nan"),
    ],
)
def test_out_of_range_numbers_are_refused_with_one_line(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        tag_model.main(["--model-metadata-path", "m", "--best-model-metadata-path", "b", flag, value])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after argparse's usage: one line naming the flag
    assert flag in last and "expected a" in last and f"got '{value}'" in last


def without_class(table: dict[str, list[dict]], class_id: str) -> dict[str, list[dict]]:
    return {digest: [box for box in boxes if box["label"] != class_id] for digest, boxes in table.items()}


def holdout_class_counts(prepared: Folders) -> dict[str, int]:
    from shared.evaluation.sheets import load_sheets

    sheets = load_sheets(
        prepared["data_split"]["holdout_output_path"],
        images_folder=step_rehearsal.SAMPLES / "images",
        images_prefix=step_rehearsal.IMAGES_PREFIX,
    )
    counts: dict[str, int] = {}
    for sheet in sheets:
        for label in sheet.labels:
            counts[label] = counts.get(label, 0) + 1
    return counts


def test_a_challenger_better_overall_that_loses_a_class_is_kept_out_naming_the_class(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path
) -> None:
    counts = holdout_class_counts(prepared)
    lost = max(counts, key=lambda c: counts[c])  # the commonest class: enough instances to be watched
    # The champion finds every symbol of that class and half of the others; the challenger all but that class.
    everything, half = answers(prepared, 1.0), answers(prepared, 0.5)
    champion_table = {
        digest: [b for b in boxes if b["label"] == lost] + [b for b in half[digest] if b["label"] != lost]
        for digest, boxes in everything.items()
    }
    tag(prepared, register(prepared, tmp_path, "champion", champion_table))
    challenger = without_class(everything, lost)
    label_map = step_rehearsal.SAMPLES / "label_map.json"
    meta = register(prepared, tmp_path, "challenger", challenger)
    record = tag(prepared, meta, "--min-class-instances", "3", "--label-map-path", str(label_map))
    assert not record.promoted and best(mlflow_workspace) == ["1"]
    assert record.comparison.interval is not None and record.comparison.interval.low > 0, "better overall"
    name = json.loads(label_map.read_text())[lost].rsplit("/", 1)[-1]
    assert "the challenger is better overall, +" in record.reason
    assert (
        f"but {name} AP fell" in record.reason and "-> 0.00" in record.reason and "the champion stays" in record.reason
    )
    guard = record.comparison.class_guard
    assert guard is not None and [c.class_id for c in guard.regressions()] == [lost]
    watched = sum(1 for c in guard.classes if c.instances >= 3)
    assert guard.confidence == pytest.approx(1 - 0.05 / watched), "Bonferroni over the watched classes"


def test_the_guard_lets_through_a_challenger_whose_classes_all_hold(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path
) -> None:
    tag(prepared, register(prepared, tmp_path, "champion", answers(prepared, 0.5)))
    record = tag(
        prepared, register(prepared, tmp_path, "challenger", answers(prepared, 1.0)), "--min-class-instances", "3"
    )
    assert record.promoted and best(mlflow_workspace) == ["2"]
    assert record.comparison.class_guard is not None and record.comparison.class_guard.regressions() == []


def test_a_class_too_rare_on_the_holdout_is_not_watched(
    prepared: Folders, tmp_path: Path, mlflow_workspace: Path
) -> None:
    counts = holdout_class_counts(prepared)
    lost = max(counts, key=lambda c: counts[c])
    tag(prepared, register(prepared, tmp_path, "champion", answers(prepared, 0.5)))
    meta = register(prepared, tmp_path, "challenger", without_class(answers(prepared, 1.0), lost))
    record = tag(prepared, meta, "--min-class-instances", str(counts[lost] + 1))
    assert record.promoted, "a class with fewer symbols than MIN_CLASS_INSTANCES does not block"


@pytest.mark.slow  # starts Chromium
def test_the_reports_per_class_chart_shows_the_guard_line_and_the_fallen_class(tmp_path: Path) -> None:
    from shared.promotion import ClassComparison, ClassGuard, DifferenceInterval
    from tests.browser import console_errors, render

    def compared(class_id: str, name: str, before: float, after: float, low: float, high: float) -> ClassComparison:
        interval = DifferenceInterval(difference=after - before, low=low, high=high, confidence=0.99, resamples=500)
        return ClassComparison(
            class_id=class_id, name=name, instances=30, champion_ap=before, challenger_ap=after, interval=interval
        )

    guard = ClassGuard(
        min_instances=20,
        max_drop=0.1,
        confidence=0.99,
        classes=[
            compared("1", "Gate valve", 0.70, 0.95, 0.10, 0.40),
            compared("7", "Relief valve", 0.31, 0.12, -0.30, -0.08),
        ],
    )
    assert [c.name for c in guard.regressions()] == ["Relief valve"]
    page = tmp_path / "report.html"
    page.write_text(f"<!doctype html><html><body>{class_guard_chart(guard)}</body></html>")
    shown = render(page, "class-guard-chart.png", size="800,400")
    assert console_errors(shown.console) == []
    assert 'class="guard-line"' in shown.dom and "Relief valve (30)" in shown.dom
    assert shown.dom.count('fill="#c0392b"') == 1, "one fallen class, drawn in red"
    assert shown.screenshot.stat().st_size > 1000


def test_a_record_stored_in_the_old_words_reads_in_the_champions_and_challengers() -> None:
    """Ledger rows and run folders written before the rename (candidate, previous best) still read, and are
    written back in the new words."""
    old = {
        "name": NAME,
        "candidate_version": "3",
        "previous_best_version": "2",
        "chosen_version": "3",
        "promoted": True,
        "candidate_score": 0.9,
        "previous_best_score": 0.8,
        "reason": "better",
        "candidate_per_class": {"1": 0.9},
        "previous_per_class": {"1": 0.8},
        "candidate_report": "file:///report.html",
    }
    record = PromotionRecord.model_validate_json(json.dumps(old))
    assert (record.challenger_version, record.champion_version) == ("3", "2")
    assert (record.challenger_score, record.champion_score) == (0.9, 0.8)
    assert (record.challenger_per_class, record.champion_per_class) == ({"1": 0.9}, {"1": 0.8})
    assert record.challenger_report == "file:///report.html"
    written = json.loads(record.to_json())
    assert "challenger_version" in written and "candidate_version" not in written
