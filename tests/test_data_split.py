"""Step 2, data split: sticky sides (train, validation, holdout), stratified by class, grouped by sheet."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline_steps import data_split
from pipeline_steps.data_split import assign_and_commit
from pipeline_steps.split_sides import SplitConfig, SplitResult, basename, image_classes, split_records, split_report
from retrainer.settings import get_settings
from shared.contracts import HoldoutManifest, SplitAssignment, SplitReport, SplitSide
from shared.mltable_io import read_records, write_records
from shared.registry.local import LocalModelRegistry
from shared.split_assignment import DEFAULT_ASSIGNMENT_NAME, SplitError
from tests.helpers import load_with_mltable, record


def dataset(images: int = 200, seed: int = 0, rare: dict[str, int] | None = None, prefix: str = "img") -> list[dict]:
    """Images with 1-4 boxes of 8 common classes (each sheet's boxes differ), plus `rare` classes."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(images):
        labels = [str(int(c)) for c in rng.integers(1, 9, size=int(rng.integers(1, 5)))]
        records.append(_unique(record(f"{prefix}_{i:04d}.jpg", labels), rng))
    for class_id, count in (rare or {}).items():
        for i in range(count):
            records.append(_unique(record(f"rare_{class_id}_{i}.jpg", [class_id, "1"]), rng))
    return records


def _unique(sheet: dict, rng: np.random.Generator) -> dict:
    sheet["label"][0]["topX"] = round(float(rng.random()) * 0.5, 4)
    return sheet


def sides_by_name(records: list[dict], result: SplitResult) -> dict[str, SplitSide]:
    return {basename(records[i]): side for side, indices in result.sides.items() for i in indices}


def test_every_image_is_on_exactly_one_side_in_the_configured_shares() -> None:
    records = dataset(images=500)
    result = split_records(records, SplitAssignment(), SplitConfig(n_fold=5, holdout_fraction=0.2))
    everyone = [i for indices in result.sides.values() for i in indices]
    assert sorted(everyone) == list(range(len(records)))
    assert len(result.sides[SplitSide.HOLDOUT]) / len(records) == pytest.approx(0.2, abs=0.03)
    assert len(result.sides[SplitSide.VAL]) / len(records) == pytest.approx(0.16, abs=0.03)


def test_each_side_follows_the_class_shares_of_the_whole_set() -> None:
    records = dataset(images=1000)
    result = split_records(records, SplitAssignment(), SplitConfig())
    holdout = set(result.sides[SplitSide.HOLDOUT])
    for c in map(str, range(1, 9)):
        with_class = [i for i in range(len(records)) if c in image_classes(records[i])]
        assert sum(i in holdout for i in with_class) / len(with_class) == pytest.approx(0.2, abs=0.03), c


def test_no_image_changes_sides_and_new_images_keep_every_side_stratified() -> None:
    """Three runs, each with more images: earlier images stay where they were, the sides stay balanced."""
    everything = dataset(images=600, seed=4)
    assignment = SplitAssignment()
    seen: dict[str, SplitSide] = {}
    for run, size in enumerate((200, 400, 600), start=1):
        records = everything[:size]
        result = split_records(records, assignment, SplitConfig())
        now = sides_by_name(records, result)
        assert {name: now[name] for name in seen} == seen, f"run {run} moved an image"
        seen, assignment = now, result.assignment
        assignment.version = run
        holdout_share = Counter(c for i in result.sides[SplitSide.HOLDOUT] for c in image_classes(records[i]))
        total = Counter(c for r in records for c in image_classes(r))
        assert all(holdout_share[c] / total[c] == pytest.approx(0.2, abs=0.05) for c in total), run


def test_the_order_records_arrive_in_does_not_change_the_sides() -> None:
    records = dataset(images=150)
    forward = split_records(records, SplitAssignment(), SplitConfig())
    backward = split_records(records[::-1], SplitAssignment(), SplitConfig())
    assert sides_by_name(records, forward) == sides_by_name(records[::-1], backward)


def test_a_known_sheet_under_a_new_name_joins_its_original_side() -> None:
    records = dataset(images=100)
    first = split_records(records, SplitAssignment(), SplitConfig())
    original = records[first.sides[SplitSide.HOLDOUT][0]]
    copy = {**original, "image_url": "renamed_copy.jpg"}
    second = split_records([*records, copy], first.assignment, SplitConfig())
    assert sides_by_name([*records, copy], second)["renamed_copy.jpg"] == SplitSide.HOLDOUT
    assert second.newly_assigned == 0


def test_copies_inside_one_batch_land_on_the_same_side() -> None:
    records = dataset(images=100)
    copies = [{**r, "image_url": f"copy_{basename(r)}"} for r in records]
    result = split_records(records + copies, SplitAssignment(), SplitConfig())
    sides = sides_by_name(records + copies, result)
    assert all(sides[basename(r)] == sides[f"copy_{basename(r)}"] for r in records)


def test_holdout_keeps_a_floor_per_class_where_the_data_allows() -> None:
    records = dataset(images=200, rare={"50": 4, "60": 2})
    result = split_records(records, SplitAssignment(), SplitConfig(holdout_min_images_per_class=2))
    holdout = Counter(c for i in result.sides[SplitSide.HOLDOUT] for c in image_classes(records[i]))
    trained = {c for i in result.sides[SplitSide.TRAIN] for c in image_classes(records[i])}
    assert holdout["50"] == 2, "4 images: 2 held out, one to train, one to validate"
    assert "60" in trained and holdout["60"] <= 1, "2 images: the floor never takes the training image"


def test_every_new_class_gets_a_training_image_first() -> None:
    records = [*dataset(images=100), record("only_one.jpg", ["77"])]
    result = split_records(records, SplitAssignment(), SplitConfig())
    assert sides_by_name(records, result)["only_one.jpg"] == SplitSide.TRAIN


def test_the_holdout_is_never_copied_into_training_whatever_the_rare_class_policy() -> None:
    records = dataset(rare={"99": 4})
    result = split_records(records, SplitAssignment(), SplitConfig(rare_class_policy="copy"))
    holdout, train = set(result.sides[SplitSide.HOLDOUT]), set(result.sides[SplitSide.TRAIN])
    assert not holdout & (train | set(result.sides[SplitSide.VAL]) | set(result.copied_to_val))
    assert {basename(records[i]) for i in result.copied_to_val} <= {f"rare_99_{i}.jpg" for i in range(4)}
    assert set(result.copied_to_val) <= train


def test_the_split_report_names_the_rare_class_policy_in_force() -> None:
    records = dataset(rare={"99": 4})
    for policy in ("copy", "train_only"):
        result = split_records(records, SplitAssignment(), SplitConfig(rare_class_policy=policy))
        assert split_report(records, result).rare_class_policy == policy


def test_by_default_no_validation_image_is_a_training_image() -> None:
    result = split_records(dataset(rare={"99": 3}), SplitAssignment(), SplitConfig())
    assert result.copied_to_val == [] and not set(result.sides[SplitSide.TRAIN]) & set(result.sides[SplitSide.VAL])


def test_mandatory_lists_win_and_say_which_image_they_moved() -> None:
    records = dataset()
    first = split_records(records, SplitAssignment(), SplitConfig())
    held_out = basename(records[first.sides[SplitSide.HOLDOUT][0]])
    config = SplitConfig(mandatory_train=(held_out, "img_0002.jpg"), mandatory_val=("img_0003.jpg", "nope.jpg"))
    second = split_records(records, first.assignment, config)
    sides = sides_by_name(records, second)
    assert sides[held_out] == SplitSide.TRAIN and sides["img_0003.jpg"] == SplitSide.VAL
    assert f"{held_out}: holdout -> train" in second.moved_by_mandatory_lists
    assert second.mandatory_not_found == ["nope.jpg"] and second.changed


def test_a_name_in_both_mandatory_lists_is_an_error() -> None:
    config = SplitConfig(mandatory_train=("a.jpg", "b.jpg"), mandatory_val=("b.jpg",))
    with pytest.raises(SplitError, match=r"in both MANDATORY_TRAIN_FILENAMES and MANDATORY_VAL_FILENAMES: b\.jpg"):
        split_records(dataset(), SplitAssignment(), config)


def test_a_class_only_in_mandatory_validation_images_is_an_error() -> None:
    records = [*dataset(), record("special.jpg", ["42"])]
    with pytest.raises(SplitError, match="class 42 appears only in MANDATORY_VAL_FILENAMES"):
        split_records(records, SplitAssignment(), SplitConfig(mandatory_val=("special.jpg",)))


def test_a_repeated_run_changes_nothing_and_writes_no_version(tmp_path: Path) -> None:
    registry = LocalModelRegistry(tmp_path)
    store = _store(registry)
    records = dataset(images=60)
    first = assign_and_commit(records, SplitConfig(), *store)
    again = assign_and_commit(records, SplitConfig(), *store)
    assert first.assignment.version == again.assignment.version == 1 and not again.changed
    assert first.holdout == again.holdout


def test_two_racing_runs_end_on_one_assignment(tmp_path: Path) -> None:
    """Both load version 0; the first to write version 1 wins, the other redoes its split on top of it."""
    load, create = _store(LocalModelRegistry(tmp_path))
    barrier = threading.Barrier(2)

    def load_together() -> SplitAssignment:
        loaded = load()
        if loaded.version == 0:
            barrier.wait(timeout=10)
        return loaded

    shared = dataset(images=40, seed=3, prefix="shared")
    batches = [shared + dataset(images=80, seed=1, prefix="a"), shared + dataset(images=80, seed=2, prefix="b")]
    results: dict[int, SplitResult] = {}

    def run(index: int) -> None:
        results[index] = assign_and_commit(batches[index], SplitConfig(), load_together, create)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.assignment.version for r in results.values()) == [1, 2]
    final = load()
    for index, result in results.items():
        used = sides_by_name(batches[index], result)
        assert {name: final.by_name[name] for name in used} == used, "what a run trained on is what the store says"


def _store(registry: LocalModelRegistry) -> tuple:
    def load() -> SplitAssignment:
        latest = registry.latest_versioned_document("assignment")
        return SplitAssignment() if latest is None else SplitAssignment.from_bytes(latest[1])

    def create(assignment: SplitAssignment) -> bool:
        return registry.create_document("assignment", str(assignment.version), assignment.to_bytes())

    return load, create


@pytest.mark.slow  # the real mltable, in its own interpreter
def test_cli_writes_three_mltables_the_holdout_version_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(tmp_path / "workspace"))
    get_settings.cache_clear()
    records = dataset(images=100)
    write_records(tmp_path / "agg", records)
    out = {side: tmp_path / side for side in ("train", "val", "holdout")}
    flags = [f"--{side}_output_path={folder}" for side, folder in out.items()]
    assert data_split.main(["--input_data_path", str(tmp_path / "agg"), "--holdout_fraction", "0.3", *flags]) == 0
    get_settings.cache_clear()
    report = SplitReport.read(out["train"])
    holdout = HoldoutManifest.read(out["holdout"]).holdout
    assert report.holdout == holdout and holdout.assignment_version == 1
    assert holdout.images == len(list(read_records(out["holdout"]))) == report.counts[SplitSide.HOLDOUT]["images"]
    assert sum(c["images"] for c in report.counts.values()) == 100
    assert load_with_mltable(out["holdout"])["rows"] == holdout.images
    per_class = json.loads((out["train"] / "split_report.json").read_text())["per_class"]
    assert set(per_class["1"]) == {f"{s}_{k}" for s in ("train", "val", "holdout") for k in ("images", "boxes")}


def test_without_stratified_split_there_is_no_validation_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(tmp_path / "workspace"))
    get_settings.cache_clear()
    write_records(tmp_path / "agg", dataset(images=20))
    flags = [f"--{side}_output_path={tmp_path / side}" for side in ("train", "val", "holdout")]
    code = data_split.main(["--input_data_path", str(tmp_path / "agg"), "--use_stratified_split", "false", *flags])
    get_settings.cache_clear()
    assert code == 0
    assert (tmp_path / "val" / "annotations.jsonl").read_text() == ""
    assert len(list(read_records(tmp_path / "train"))) + len(list(read_records(tmp_path / "holdout"))) == 20


# --- a damaged stored assignment: refused with one line that names it and its repair ------------------

ASSIGNMENT = DEFAULT_ASSIGNMENT_NAME
DAMAGED_ASSIGNMENTS = {
    "half-written": b'{"version": 1, "by_name": {"img_0000.jpg": "hold',
    "empty": b"",
    "list-shaped": b'[{"version": 1}]',
    "wrong-sided": b'{"version": 1, "by_name": {"img_0000.jpg": "test"}}',
    "another version's document": b'{"version": 0, "by_name": {}, "by_fingerprint": {}}',
    "not UTF-8": b"\xff\xfe{",
    "a side for a name with a newline": b'{"version": 1, "by_name": {"a\\nb.jpg": "test"}}',
}


def run_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: list[dict]) -> int:
    """The split step's command line on a local workspace, as a pipeline run starts it."""
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(tmp_path / "workspace"))
    get_settings.cache_clear()
    write_records(tmp_path / "agg", records)
    flags = [f"--{side}_output_path={tmp_path / side}" for side in ("train", "val", "holdout")]
    try:
        return data_split.main(["--input_data_path", str(tmp_path / "agg"), *flags])
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("case", sorted(DAMAGED_ASSIGNMENTS))
def test_a_damaged_assignment_fails_the_step_with_one_line_naming_it_and_its_repair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    LocalModelRegistry(tmp_path / "workspace").create_document(ASSIGNMENT, "1", DAMAGED_ASSIGNMENTS[case])
    assert run_step(tmp_path, monkeypatch, dataset(images=30)) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"split assignment {ASSIGNMENT} version 1 is unreadable" in err
    assert f"retrain split reset --name {ASSIGNMENT} --reason" in err
    assert not (tmp_path / "train" / "annotations.jsonl").exists(), "nothing trains on a guessed split"


def test_an_assignment_that_leaves_no_training_image_fails_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    records = dataset(images=30)
    everything_held_out = SplitAssignment(version=1, by_name={basename(r): SplitSide.HOLDOUT for r in records})
    LocalModelRegistry(tmp_path / "workspace").create_document(ASSIGNMENT, "1", everything_held_out.to_bytes())
    assert run_step(tmp_path, monkeypatch, records) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "leaves no training image" in err, err
    assert "30 held out" in err and f"{ASSIGNMENT} version 1" in err and "retrain split reset" in err


def test_retrain_split_reset_starts_a_new_version_that_records_why_and_the_next_run_splits_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from retrainer import cli

    registry = LocalModelRegistry(tmp_path / "workspace")
    registry.create_document(ASSIGNMENT, "1", DAMAGED_ASSIGNMENTS["half-written"])
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(tmp_path / "workspace"))
    get_settings.cache_clear()
    assert cli.main(["split", "reset", "--reason", "version 1 was half-written by a killed step"]) == 0
    out = capsys.readouterr().out
    assert (
        f"started split assignment {ASSIGNMENT} version 2" in out
        and "replacing version 1, which was unreadable (Invalid JSON" in out
    )
    latest = registry.latest_versioned_document(ASSIGNMENT)
    assert latest is not None
    restarted = json.loads(latest[1])
    assert restarted["version"] == 2 and restarted["by_name"] == {}
    assert restarted["restart"]["reason"] == "version 1 was half-written by a killed step"
    assert restarted["restart"]["replaces_version"] == 1 and "unreadable" in restarted["restart"]["replaced"]
    assert run_step(tmp_path, monkeypatch, dataset(images=30)) == 0
    assert SplitReport.read(tmp_path / "train").assignment_version == 3


def test_retrain_split_reset_refuses_to_discard_a_readable_assignment_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A readable assignment holds the holdout every promotion so far was decided on."""
    from retrainer import cli

    assert run_step(tmp_path, monkeypatch, dataset(images=30)) == 0
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(tmp_path / "workspace"))
    get_settings.cache_clear()
    capsys.readouterr()
    assert cli.main(["split", "reset", "--reason", "new holdout fraction"]) == 2
    assert "version 1 is readable (30 images)" in capsys.readouterr().err
    assert cli.main(["split", "reset", "--reason", "new holdout fraction", "--force"]) == 0
    latest = LocalModelRegistry(tmp_path / "workspace").latest_versioned_document(ASSIGNMENT)
    assert latest is not None and json.loads(latest[1])["restart"]["replaced"] == "readable (30 images)"
