"""The tag step's scoring: a fixed sample of the holdout, a time budget, and one call for every model.

Models are the rehearsal's stand-ins (MLflow models from code that answer from a table), so these
tests need no trained detector: the scoring path is the one a real model goes through.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from devtools.step_rehearsal import save_stand_in
from devtools.synthetic import SheetSpec, write_mltable_set
from pipeline_steps.evaluation import scoring
from pipeline_steps.evaluation.scoring import (
    FIRST_BATCH,
    MAX_BATCH,
    ModelNotScorable,
    ModelRuntime,
    RuntimeKind,
    next_batch,
    predict_sheets,
    score_models,
    scoring_sample,
)
from shared.evaluation.sheets import Sheet, load_sheets
from shared.mltable_io import annotations_path

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


@pytest.mark.slow  # saves and loads MLflow models (importing MLflow alone takes seconds)
def test_a_model_is_scored_through_the_contract(holdout: list[Sheet], tmp_path: Path) -> None:
    model = save_stand_in(tmp_path / "perfect", perfect_answers(holdout), validation_map=1.0)
    predictions = predict_sheets(model, holdout[:3])
    for sheet, prediction in zip(holdout[:3], predictions, strict=True):
        assert prediction.labels == sheet.labels
        assert prediction.boxes == pytest.approx(sheet.boxes, abs=1e-3)


@pytest.mark.slow  # saves and loads MLflow models (importing MLflow alone takes seconds)
def test_the_budget_stops_between_batches_and_both_models_score_the_same_images(
    holdout: list[Sheet], tmp_path: Path
) -> None:
    answers = perfect_answers(holdout)
    models = [save_stand_in(tmp_path / name, answers, validation_map=0.5) for name in ("a", "b")]
    ticks = itertools.count()
    # Each look at the clock is a minute later: the first batch's pace leaves no time for a second.
    scored = score_models(models, holdout, deadline=130.0, clock=lambda: next(ticks) * 60.0)
    assert scored.stopped_by_budget
    assert len(scored.sheets) == FIRST_BATCH
    assert names(scored.sheets) == names(holdout[: len(scored.sheets)]), "a prefix of the sample's order"
    assert [len(p) for p in scored.predictions] == [len(scored.sheets)] * 2
    everything = score_models(models, holdout)
    assert not everything.stopped_by_budget and len(everything.sheets) == len(holdout)


class PacedModels:
    """Stands in for `predict_sheets`: each sheet a model scores moves the clock on by `seconds_per_sheet`."""

    def __init__(self, seconds_per_sheet: float) -> None:
        self.now, self.pace = 0.0, seconds_per_sheet
        self.batches: list[int] = []

    def clock(self) -> float:
        return self.now

    def predict(self, folder: Path, sheets: list[Sheet], runtime: object, timeout: float | None) -> list:
        if folder.name == "challenger":
            self.batches.append(len(sheets))
        self.now += self.pace * len(sheets)
        return [None] * len(sheets)


@pytest.mark.parametrize(("kind", "pace", "deadline"), [("automl", 90.0, 3600.0), ("local", 0.5, 60.0)])
def test_the_first_batch_is_small_and_later_ones_fit_the_time_left(
    kind: RuntimeKind, pace: float, deadline: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AutoML's tiled model on a CPU takes minutes a sheet: 32 sheets x 2 models before a first look at the clock
    was hours past any budget. Now no batch starts that the measured pace says would end past the deadline."""
    paced = PacedModels(pace)
    monkeypatch.setattr(scoring, "predict_sheets", paced.predict)
    sheets = [Sheet(Path(f"/holdout/{i}.jpg"), 10, 10, np.zeros((0, 4), dtype=np.float32), ()) for i in range(400)]
    runtime = ModelRuntime(kind, sys.executable if kind == "automl" else None)
    models = [Path("challenger"), Path("champion")]
    scored = score_models(models, sheets, runtime, deadline=deadline, clock=paced.clock)
    assert paced.batches[0] == FIRST_BATCH
    assert all(later <= 2 * earlier for earlier, later in itertools.pairwise(paced.batches))
    assert max(paced.batches) <= MAX_BATCH[kind]
    assert paced.now <= deadline, "no batch ran past the deadline"
    assert scored.stopped_by_budget and len(scored.sheets) == sum(paced.batches)
    assert paced.now + 2 * pace * MAX_BATCH[kind] > deadline or len(scored.sheets) == len(sheets)


def test_a_batch_is_sized_from_the_pace_and_the_time_left() -> None:
    assert next_batch(2, seconds_per_sheet=100.0, seconds_left=1000.0, cap=32) == 4, "at most twice the last"
    assert next_batch(16, seconds_per_sheet=100.0, seconds_left=1000.0, cap=32) == 10, "what the time left affords"
    assert next_batch(16, seconds_per_sheet=1.0, seconds_left=1000.0, cap=8) == 8, "at most the cap"
    assert next_batch(4, seconds_per_sheet=100.0, seconds_left=99.0, cap=32) == 0, "not one more sheet: stop"
    assert next_batch(4, seconds_per_sheet=100.0, seconds_left=-5.0, cap=32) == 0
    assert next_batch(4, seconds_per_sheet=100.0, seconds_left=None, cap=32) == 8, "no deadline"


@pytest.mark.slow  # another interpreter imports MLflow for each call
def test_automl_models_score_in_another_interpreter_through_mlflows_own_command(
    holdout: list[Sheet], tmp_path: Path
) -> None:
    """On Azure ML the models' code lives in AutoML's interpreter in the step's image: `mlflow models predict
    --env-manager local` runs there. This environment's interpreter stands in for it."""
    model = save_stand_in(tmp_path / "perfect", perfect_answers(holdout), validation_map=1.0)
    here = predict_sheets(model, holdout[:3])
    there = predict_sheets(model, holdout[:3], ModelRuntime("automl", sys.executable), timeout=300)
    for a, b in zip(here, there, strict=True):
        assert a.labels == b.labels and a.boxes == pytest.approx(b.boxes)
    missing = ModelRuntime("automl", str(tmp_path / "no-such-python"))
    with pytest.raises(ModelNotScorable, match="cannot run"):
        predict_sheets(model, holdout[:1], missing)


@pytest.mark.slow  # another interpreter imports MLflow, then a call waits out a 20 s deadline
def test_a_call_in_automls_interpreter_that_outlives_the_deadline_is_stopped(
    holdout: list[Sheet], tmp_path: Path
) -> None:
    """The first batch scores; the second call hangs past the deadline: it is stopped, and the first decides."""
    model = save_stand_in(tmp_path / "perfect", perfect_answers(holdout), validation_map=1.0)
    calls = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(
        f"#!/bin/sh\necho >> {calls}\n"
        f'if [ $(wc -l < {calls}) -gt 1 ]; then exec sleep 60; fi\nexec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    started = time.monotonic()
    scored = score_models([model], holdout, ModelRuntime("automl", str(python)), deadline=started + 20)
    assert time.monotonic() - started < 50, "the hanging call was stopped at the deadline"
    assert scored.stopped_by_budget and len(scored.sheets) == FIRST_BATCH


@pytest.mark.slow  # saves and loads MLflow models (importing MLflow alone takes seconds)
def test_a_model_that_cannot_load_is_named(holdout: list[Sheet], tmp_path: Path) -> None:
    """A damaged model raises whatever its own code raises; the scorer names the model instead."""
    model = save_stand_in(tmp_path / "broken", {}, validation_map=0.5)
    for artifact in model.rglob("broken-answers.json"):  # the copy MLflow keeps inside the model is the one it loads
        artifact.write_text("{")
    with pytest.raises(ModelNotScorable, match="could not score: JSONDecodeError") as raised:
        predict_sheets(model, holdout[:1])
    assert str(model) in str(raised.value)
