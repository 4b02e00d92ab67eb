"""The CPU steps' rehearsal (what `make env-check` runs inside the steps' pinned environment), run here too."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools import step_rehearsal
from retrainer.workspace.local_runner import run_folders, step_command
from shared.contracts import HoldoutManifest
from shared.promotion import PromotionRecord

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PromotionRecord]]:
    work = tmp_path_factory.mktemp("rehearsal")
    return work, step_rehearsal.rehearse(work)


def test_the_better_model_wins_on_the_holdout_through_the_deciding_steps_own_call(
    rehearsed: tuple[Path, list[PromotionRecord]],
) -> None:
    work, (first, second) = rehearsed
    holdout = HoldoutManifest.read(run_folders(work)["data_split"]["holdout_output_path"]).holdout
    assert first.promoted and first.reason == "no model was tagged best yet"
    assert second.promoted and second.best_version == "2" and second.champion_version == "1"
    assert second.comparison.holdout == holdout and second.comparison.scored_images == holdout.images > 0
    assert second.comparison.interval is not None and second.comparison.interval.low > 0
    assert second.challenger_score > second.champion_score  # type: ignore[operator]


def test_a_capped_decision_says_how_many_images_of_how_many_it_scored(
    rehearsed: tuple[Path, list[PromotionRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, _ = rehearsed
    folders = run_folders(work)
    for key, value in {"WORKSPACE_BACKEND": "local", "LOCAL_WORKSPACE_DIR": str(work / "workspace")}.items():
        monkeypatch.setenv(key, value)
    aggregated, images = folders["data_aggregation"]["output_path"], step_rehearsal.SAMPLES / "images"
    answers = step_rehearsal.stand_in_answers(aggregated, 0.95, images, step_rehearsal.IMAGES_PREFIX)
    model = step_rehearsal.save_stand_in(work / "model-3", answers, validation_map=0.95)
    env = step_rehearsal.step_env(work / "workspace")
    inputs: dict[str, dict[str, object]] = {
        "register_model": {"model_input_path": model, "model_metadata_path": work / "meta-3"},
        "tag_model": {
            "model_metadata_path": work / "meta-3",
            "images_string_absolute_path": step_rehearsal.IMAGES_PREFIX,
            "max_holdout_images": 3,
            "bootstrap_resamples": 200,
            "best_model_metadata_path": work / "best-3",
        },
    }
    for step, changed in inputs.items():  # the rehearsal's folders, the third model's where it has its own
        step_rehearsal.run_step(step, step_command(step, {**folders[step], **changed}), env, work / "logs")
    record = PromotionRecord.read(work / "best-3")
    holdout = HoldoutManifest.read(folders["data_split"]["holdout_output_path"]).holdout
    assert (record.comparison.scored_images, record.comparison.sample_limit) == (3, 3)
    assert f"on 3 of its {holdout.images} images, a fixed sample (at most 3)" in record.comparison.describe()
    assert not record.promoted, "the same answers as the champion on the same images: no reason to promote"


def test_a_failing_step_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = tmp_path / "no-sheets"
    for folder in ("images", "labels"):
        (samples / folder).mkdir(parents=True)
    monkeypatch.setattr(step_rehearsal, "SAMPLES", samples)
    assert step_rehearsal.main(["--work", str(tmp_path / "work")]) == 1
    assert "step rehearsal: step data_aggregation failed (exit 1)" in capsys.readouterr().err
