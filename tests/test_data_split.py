"""Step 2, data split: stratified by class, grouped by image, with the original pipeline's options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline_steps import data_split
from pipeline_steps.data_split import SplitConfig, SplitError, basename, image_classes, split_records
from pipeline_steps.mltable_io import read_records, write_records
from tests.helpers import record


def dataset(images: int = 200, seed: int = 0, rare: dict[str, int] | None = None) -> list[dict]:
    """Images with 1-4 boxes of 8 common classes, plus `rare` classes on that many images each."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(images):
        labels = [str(int(c)) for c in rng.integers(1, 9, size=int(rng.integers(1, 5)))]
        records.append(record(f"img_{i:04d}.jpg", labels))
    for class_id, count in (rare or {}).items():
        for i in range(count):
            records.append(record(f"rare_{class_id}_{i}.jpg", [class_id, "1"]))
    return records


def names(records: list[dict], indices: list[int]) -> list[str]:
    return [basename(records[i]) for i in indices]


def test_no_image_is_in_both_sets_and_every_image_is_used() -> None:
    records = dataset()
    result = split_records(records, SplitConfig(n_fold=5))
    assert not set(result.train) & set(result.val)
    assert sorted(result.train + result.val) == list(range(len(records)))
    assert 0.15 < len(result.val) / len(records) < 0.25


def test_class_shares_in_validation_follow_the_whole_set() -> None:
    records = dataset(images=1000)
    result = split_records(records, SplitConfig(n_fold=5))
    for c in map(str, range(1, 9)):
        with_class = [i for i in range(len(records)) if c in image_classes(records[i])]
        share = sum(i in set(result.val) for i in with_class) / len(with_class)
        assert share == pytest.approx(0.2, abs=0.03), c


def test_same_seed_same_split_other_seed_other_split() -> None:
    records = dataset()
    first, again = split_records(records, SplitConfig(seed=1)), split_records(records, SplitConfig(seed=1))
    other = split_records(records, SplitConfig(seed=2))
    assert first.val == again.val and first.val != other.val


def test_rare_classes_are_copied_to_both_sets_by_default_and_reported() -> None:
    records = dataset(rare={"99": 3})
    result = split_records(records, SplitConfig(n_fold=5))
    rare = [f"rare_99_{i}.jpg" for i in range(3)]
    assert set(rare) <= set(names(records, result.train)) and set(rare) <= set(names(records, result.val))
    assert result.notes["rare_classes"] == ["99"] and result.notes["rare_class_images"] == 3
    assert set(result.train) & set(result.val) == {names(records, list(range(len(records)))).index(r) for r in rare}


def test_rare_classes_can_be_kept_in_train_only() -> None:
    records = dataset(rare={"99": 3})
    result = split_records(records, SplitConfig(n_fold=5, rare_class_policy="train_only"))
    assert not set(result.train) & set(result.val)
    assert not {"rare_99_0.jpg", "rare_99_1.jpg", "rare_99_2.jpg"} & set(names(records, result.val))


def test_mandatory_lists_force_images_and_unknown_names_are_reported() -> None:
    records = dataset()
    config = SplitConfig(mandatory_train=("img_0001.jpg", "img_0002.jpg"), mandatory_val=("img_0003.jpg", "nope.jpg"))
    result = split_records(records, config)
    assert {"img_0001.jpg", "img_0002.jpg"} <= set(names(records, result.train))
    assert "img_0003.jpg" in names(records, result.val)
    assert result.notes["mandatory_not_found"] == ["nope.jpg"]


def test_a_name_in_both_mandatory_lists_is_an_error() -> None:
    config = SplitConfig(mandatory_train=("a.jpg", "b.jpg"), mandatory_val=("b.jpg",))
    with pytest.raises(SplitError, match=r"in both MANDATORY_TRAIN_FILENAMES and MANDATORY_VAL_FILENAMES: b\.jpg"):
        split_records(dataset(), config)


def test_every_class_keeps_a_training_image() -> None:
    records = dataset(rare={"77": 1})
    records.append(record("only_val.jpg", ["55"]))
    records.append(record("only_val_2.jpg", ["55"]))
    result = split_records(records, SplitConfig(n_fold=5, rare_class_policy="train_only"))
    trained = {c for i in result.train for c in image_classes(records[i])}
    assert trained == {c for r in records for c in image_classes(r)}


def test_a_class_only_in_mandatory_validation_images_is_an_error() -> None:
    records = [*dataset(), record("special.jpg", ["42"])]
    with pytest.raises(SplitError, match="class 42 appears only in MANDATORY_VAL_FILENAMES"):
        split_records(records, SplitConfig(mandatory_val=("special.jpg",)))


def test_too_few_images_for_the_folds_is_a_clear_error() -> None:
    with pytest.raises(SplitError, match="cannot make 5 folds"):
        split_records(dataset(images=3), SplitConfig(n_fold=5))


def test_without_stratified_split_everything_trains_and_val_is_an_empty_valid_mltable(tmp_path: Path) -> None:
    import mltable

    write_records(tmp_path / "agg", dataset(images=20))
    code = data_split.main(
        [
            "--input_data_path",
            str(tmp_path / "agg"),
            "--use_stratified_split",
            "false",
            "--train_output_path",
            str(tmp_path / "train"),
            "--val_output_path",
            str(tmp_path / "val"),
        ]
    )
    assert code == 0
    assert len(list(read_records(tmp_path / "train"))) == 20
    assert (tmp_path / "val" / "annotations.jsonl").read_text() == ""
    assert len(mltable.load(str(tmp_path / "val")).to_pandas_dataframe()) == 0


def test_cli_takes_env_defaults_and_writes_the_per_class_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = dataset(rare={"99": 2})
    write_records(tmp_path / "agg", records)
    monkeypatch.setenv("USE_STRATIFIED_SPLIT", "True")
    monkeypatch.setenv("STRATIFIED_SPLIT_N_FOLD", "4")
    monkeypatch.setenv("MANDATORY_VAL_FILENAMES", "img_0005.jpg; img_0006.jpg")
    code = data_split.main(
        [
            "--input_data_path",
            str(tmp_path / "agg"),
            "--train_output_path",
            str(tmp_path / "train"),
            "--val_output_path",
            str(tmp_path / "val"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "train" / "split_report.json").read_text())
    assert report["n_fold"] == 4
    val_names = [basename(r) for r in read_records(tmp_path / "val")]
    assert {"img_0005.jpg", "img_0006.jpg"} <= set(val_names)
    assert report["val"]["images"] == len(val_names)
    assert report["images_in_both"] == ["rare_99_0.jpg", "rare_99_1.jpg"]
    total_boxes = sum(len(r["label"]) for r in records)
    per_class = report["per_class"]
    assert sum(v["train_boxes"] + v["val_boxes"] for v in per_class.values()) == total_boxes + 4  # rare copies
    assert per_class["99"] == {"train_images": 2, "val_images": 2, "train_boxes": 2, "val_boxes": 2}


def test_cli_exits_non_zero_on_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_records(tmp_path / "agg", dataset(images=20))
    code = data_split.main(
        [
            "--input_data_path",
            str(tmp_path / "agg"),
            "--mandatory_train_filenames",
            "img_0001.jpg",
            "--mandatory-val-filenames",
            "img_0001.jpg",
            "--train_output_path",
            str(tmp_path / "t"),
            "--val_output_path",
            str(tmp_path / "v"),
        ]
    )
    assert code == 1 and "in both" in capsys.readouterr().err


def test_refinement_lowers_the_box_share_deviation_and_keeps_set_sizes() -> None:
    from pipeline_steps.data_split import _box_count_matrix, box_share_deviation, refine_box_shares

    records = dataset(images=600, seed=3)
    counts = _box_count_matrix(records)
    in_val = np.zeros(len(records), dtype=bool)
    in_val[:120] = True  # a deliberately poor start: the first fifth
    before = box_share_deviation(counts, in_val)
    refine_box_shares(counts, in_val, np.random.default_rng(0))
    assert in_val.sum() == 120
    assert box_share_deviation(counts, in_val) < before / 2
