"""The tag step's scoring: a fixed sample of the holdout, a time budget, and one call for every model.

Models are the rehearsal's stand-ins (MLflow models from code that answer from a table), so these
tests need no trained detector: the scoring path is the one a real model goes through.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from pathlib import Path

import pytest

from devtools.step_rehearsal import save_stand_in
from devtools.synthetic import SheetSpec, write_mltable_set
from pipeline_steps.evaluation.scoring import ModelNotScorable, predict_sheets, score_models, scoring_sample
from pipeline_steps.evaluation.sheets import Sheet, load_sheets
from pipeline_steps.mltable_io import annotations_path

SMALL = SheetSpec(min_side=200, max_side=260, min_symbols=2, max_symbols=4)


@pytest.fixture(scope="module")
def holdout(tmp_path_factory: pytest.TempPathFactory) -> list[Sheet]:
    return load_sheets(write_mltable_set(tmp_path_factory.mktemp("holdout"), 20, seed=31, spec=SMALL))


def perfect_answers(sheets: list[Sheet]) -> dict[str, list[dict]]:
    """Every true box, as the contract gives it (normalised, with a label and a score)."""
    answers = {}
    for sheet in sheets:
        boxes = [
            {
                "box": {
                    "topX": float(b[0]) / sheet.width,
                    "topY": float(b[1]) / sheet.height,
                    "bottomX": float(b[2]) / sheet.width,
                    "bottomY": float(b[3]) / sheet.height,
                },
                "label": label,
                "score": 0.9,
            }
            for b, label in zip(sheet.boxes, sheet.labels, strict=True)
        ]
        answers[hashlib.sha256(sheet.path.read_bytes()).hexdigest()] = boxes
    return answers


def names(sheets: list[Sheet]) -> list[str]:
    return [s.path.name for s in sheets]


def test_the_sample_is_the_same_run_after_run_and_capped(holdout: list[Sheet]) -> None:
    sample = scoring_sample(holdout, 8)
    assert len(sample) == 8 and len(set(names(sample))) == 8
    assert names(scoring_sample(list(reversed(holdout)), 8)) == names(sample), "order of the holdout does not matter"
    assert names(scoring_sample(holdout, None)) == names(scoring_sample(holdout, 100)) and len(holdout) == 20
    assert names(scoring_sample(holdout, 8, seed="another")) != names(sample), "the seed chooses the sample"


def _holdout_at(images: Path, folder: Path, prefix: str, source: Path) -> Path:
    """The source set's images under `images` and its MLTable in `folder`, with URLs `<prefix>/<relative>`."""
    shutil.copytree(source / "images", images / "sub")
    lines = []
    for line in annotations_path(source).read_text().splitlines():
        record = json.loads(line)
        record["image_url"] = f"{prefix}/sub/{record['image_url'].rsplit('/', 1)[-1]}"
        lines.append(json.dumps(record))
    folder.mkdir(parents=True)
    (folder / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_the_sample_is_the_same_under_any_mount_point_or_run_folder(tmp_path: Path) -> None:
    """Azure ML mounts the image folder under each job's own folder, and a local run copies it into its own."""
    source = write_mltable_set(tmp_path / "source", 30, seed=32, spec=SMALL)
    prefix = "azureml://subscriptions/s/resourcegroups/g/workspaces/w/datastores/retraining_data/paths/data/images"
    samples = []
    for job in ("0f1e2d", "9a8b7c"):
        mount = tmp_path / "mnt" / "azureml" / "cr" / "j" / job / "cap" / "data-capability" / "wd" / "images"
        holdout = _holdout_at(mount, tmp_path / job / "holdout", prefix, source)
        samples.append(scoring_sample(load_sheets(holdout, images_folder=mount, images_prefix=prefix), 10))
    for run in ("run-1", "run-2"):
        images = tmp_path / run / "data" / "images"
        holdout = _holdout_at(images, tmp_path / run / "holdout", images.resolve().as_uri(), source)
        samples.append(scoring_sample(load_sheets(holdout, images_folder=images), 10))
    assert all(s[0].path != samples[0][0].path for s in samples[1:]), "four different folders"
    chosen = [names(sample) for sample in samples]
    assert chosen == [chosen[0]] * 4
    assert [sheet.key for sheet in samples[0]] == [f"sub/{name}" for name in chosen[0]]


def test_a_growing_holdout_keeps_the_sample_where_no_new_image_ranks_in(holdout: list[Sheet]) -> None:
    before, after = scoring_sample(holdout[:12], 6), scoring_sample(holdout, 6)
    ranked = names(scoring_sample(holdout, None))
    # The sample is the first six of one global ranking: an old image leaves only for a new one that ranks higher.
    assert names(after) == ranked[:6]
    assert names(before) == [n for n in ranked if n in names(holdout[:12])][:6]


def test_a_model_is_scored_through_the_contract(holdout: list[Sheet], tmp_path: Path) -> None:
    model = save_stand_in(tmp_path / "perfect", perfect_answers(holdout), validation_map=1.0)
    predictions = predict_sheets(model, holdout[:3])
    for sheet, prediction in zip(holdout[:3], predictions, strict=True):
        assert prediction.labels == sheet.labels
        assert prediction.boxes == pytest.approx(sheet.boxes, abs=1e-3)


def test_the_budget_stops_between_batches_and_both_models_score_the_same_images(
    holdout: list[Sheet], tmp_path: Path
) -> None:
    answers = perfect_answers(holdout)
    models = [save_stand_in(tmp_path / name, answers, validation_map=0.5) for name in ("a", "b")]
    ticks = itertools.count()
    # Each look at the clock is a minute later: with a budget of 1.5 minutes the third batch never starts.
    scored = score_models(models, holdout, "local", budget_seconds=90, clock=lambda: next(ticks) * 60.0)
    assert scored.stopped_by_budget
    assert 0 < len(scored.sheets) < len(holdout)
    assert names(scored.sheets) == names(holdout[: len(scored.sheets)]), "a prefix of the sample's order"
    assert [len(p) for p in scored.predictions] == [len(scored.sheets)] * 2
    everything = score_models(models, holdout, "local", budget_seconds=None)
    assert not everything.stopped_by_budget and len(everything.sheets) == len(holdout)


def test_a_model_that_cannot_load_is_named(holdout: list[Sheet], tmp_path: Path) -> None:
    """A damaged model raises whatever its own code raises; the scorer names the model instead."""
    model = save_stand_in(tmp_path / "broken", {}, validation_map=0.5)
    for artifact in model.rglob("broken-answers.json"):  # the copy MLflow keeps inside the model is the one it loads
        artifact.write_text("{")
    with pytest.raises(ModelNotScorable, match="could not score: JSONDecodeError") as raised:
        predict_sheets(model, holdout[:1])
    assert str(model) in str(raised.value)
