"""Step 4 locally: the CPU trainer writes an MLflow model that loads, predicts by AutoML's contract, and repeats."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_steps import train as train_step
from pipeline_steps.detector.data import CropSampler
from pipeline_steps.evaluation.metrics import Prediction, evaluate
from shared.evaluation.sheets import Sheet, load_sheets


@pytest.fixture
def data(training_sets: tuple[Path, Path]) -> tuple[Path, Path]:
    return training_sets


@pytest.fixture
def trained(trained_model: Path) -> Path:
    return trained_model


def test_output_is_an_mlflow_model_folder_with_metrics_and_report(trained: Path) -> None:
    assert (trained / "MLmodel").is_file()
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("mean_average_precision", "coco_map", "precision", "recall"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["per_class"]) <= set(metrics["classes"]) and metrics["epochs"] == 1
    report = trained / metrics["report"]
    assert report.is_file() and "Per-class average precision" in report.read_text()
    assert (report.parent / "precision_recall.png").is_file() and (report.parent / "val_00.png").is_file()


def test_model_loads_and_scores_by_the_automl_contract(trained: Path, data: tuple[Path, Path]) -> None:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(trained))
    sheet = load_sheets(data[1])[0]
    encoded = base64.b64encode(sheet.path.read_bytes()).decode("ascii")
    result = model.predict(pd.DataFrame({"image": [encoded, encoded]}))
    assert list(result.columns) == ["boxes"] and len(result) == 2
    classes = json.loads((trained / "metrics.json").read_text())["classes"]
    for detection in result["boxes"][0]:
        box = detection["box"]
        assert 0.0 <= box["topX"] < box["bottomX"] <= 1.0 and 0.0 <= box["topY"] < box["bottomY"] <= 1.0
        assert detection["label"] in classes and 0.0 <= detection["score"] <= 1.0
    assert result["boxes"][0] == result["boxes"][1]


def test_same_seed_and_epochs_give_the_same_model(trained: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    again = tmp_path / "again"
    train_step.main(
        [
            "--train-data",
            str(data[0]),
            "--val-data",
            str(data[1]),
            "--output",
            str(again),
            "--epochs",
            "1",
            "--seed",
            "3",
        ]
    )
    first, second = (json.loads((p / "metrics.json").read_text()) for p in (trained, again))
    for key in ("mean_average_precision", "coco_map", "precision", "recall", "per_class"):
        assert first[key] == second[key]


def test_empty_training_set_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "annotations.jsonl").write_text("")
    code = train_step.main(["--train-data", str(tmp_path / "empty"), "--output", str(tmp_path / "m")])
    assert code == 1 and "has no training records" in capsys.readouterr().err


def test_coco_metrics_reward_right_boxes_and_punish_confused_classes(data: tuple[Path, Path]) -> None:
    sheets = load_sheets(data[1])
    classes = sorted({label for s in sheets for label in s.labels}, key=int)
    perfect = [Prediction(s.boxes.copy(), np.ones(len(s.boxes)), s.labels) for s in sheets]
    assert evaluate(sheets, perfect, classes).metrics["mean_average_precision"] == pytest.approx(1.0)
    swapped = [Prediction(s.boxes.copy(), np.ones(len(s.boxes)), tuple(reversed(s.labels))) for s in sheets]
    assert evaluate(sheets, swapped, classes).metrics["mean_average_precision"] < 0.9
    shifted = [Prediction(s.boxes + 6.0, np.ones(len(s.boxes)), s.labels) for s in sheets]
    result = evaluate(sheets, shifted, classes)
    assert result.metrics["coco_map"] < result.metrics["mean_average_precision"] <= 1.0


def test_crowd_boxes_are_left_out_of_training_and_metrics(tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("RGB", (100, 80), "white").save(image)
    record = {
        "image_url": image.as_uri(),
        "image_details": {"width": 100, "height": 80},
        "label": [
            {"label": "1", "topX": 0.1, "topY": 0.1, "bottomX": 0.3, "bottomY": 0.3},
            {"label": "2", "topX": 0.5, "topY": 0.5, "bottomX": 0.7, "bottomY": 0.7, "isCrowd": 1},
        ],
    }
    (tmp_path / "annotations.jsonl").write_text(json.dumps(record) + "\n")
    (sheet,) = load_sheets(tmp_path)
    assert sheet.labels == ("1",) and sheet.boxes.tolist() == [[10.0, 8.0, 30.0, 24.0]]


def test_sheets_are_padded_with_paper_not_grey() -> None:
    """A grey pad made a paper/grey edge along every sheet's right and bottom, which looked like a flange."""
    import torch

    from pipeline_steps.detector.model import build_detector

    model = build_detector(3).eval()
    blank_sheet = torch.ones(3, 70, 90)  # white paper, sides not multiples of 32
    batched, _ = model.transform([blank_sheet])
    assert batched.tensors.shape[-2:] == (96, 96)
    assert torch.equal(batched.tensors, torch.full_like(batched.tensors, float(batched.tensors[0, 0, 0, 0])))


def test_the_confusion_matrix_shows_look_alikes_misses_and_false_detections(data: tuple[Path, Path]) -> None:
    from pipeline_steps.evaluation.metrics import confusion

    sheets = load_sheets(data[1])
    classes = sorted({label for s in sheets for label in s.labels}, key=int)
    background = len(classes)
    perfect = [Prediction(s.boxes.copy(), np.ones(len(s.boxes)), s.labels) for s in sheets]
    exact = confusion(sheets, perfect, classes, score_threshold=0.3)
    total = sum(len(s.boxes) for s in sheets)
    assert int(np.trace(exact.matrix)) == total and exact.matrix.sum() == total
    first, second = classes[0], classes[1]
    sheet = sheets[0]
    relabelled = tuple(second if label == first else label for label in sheet.labels)
    extra = np.vstack([sheet.boxes[1:], [[1, 1, 9, 9]]]).astype(np.float32)  # drop one symbol, add a ghost
    prediction = Prediction(extra, np.ones(len(extra)), (*relabelled[1:], first))
    result = confusion([sheet], [prediction], classes, score_threshold=0.3)
    swapped = sum(1 for label in sheet.labels[1:] if label == first)
    assert result.matrix[classes.index(first), classes.index(second)] == swapped, "look-alikes off the diagonal"
    assert result.matrix[classes.index(sheet.labels[0]), background] == 1, "the missed symbol"
    assert result.matrix[background, classes.index(first)] == 1, "the ghost detection"
    assert len(result.false_positives) == 1 and len(result.false_negatives) == 1


def test_the_report_names_classes_and_renders_its_charts_in_chromium(trained: Path) -> None:
    from tests.browser import console_errors, render

    metrics = json.loads((trained / "metrics.json").read_text())
    report = trained / metrics["report"]
    for chart in ("learning_curve.png", "confusion_matrix.png", "precision_recall.png"):
        assert (report.parent / chart).stat().st_size > 5_000, chart
    text = report.read_text()
    from devtools.synthetic import LABEL_MAP

    assert any(html_name in text for html_name in (name.replace("&", "&amp;") for name in LABEL_MAP.values()))
    assert ">nan<" not in text.lower()
    rendered = render(report, "evaluation-report.png", size="1200,2600")
    for element in ('id="per-class"', 'id="learning-curve"', 'id="confusion-matrix"', 'id="misses"'):
        assert element in rendered.dom, element
    assert console_errors(rendered.console) == []
    assert rendered.screenshot.stat().st_size > 20_000


class _MarkerDetector(torch.nn.Module):
    """Finds bright squares in a tile (partial ones at its edges too), as a detector would see them."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        from scipy import ndimage

        found, count = ndimage.label(images[0][0].numpy() > 0.5)
        boxes = [
            [float(s[1].start), float(s[0].start), float(s[1].stop), float(s[0].stop)]
            for s in ndimage.find_objects(found)
        ]
        return [
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.ones(count),
                "labels": torch.ones(count, dtype=torch.int64),
            }
        ]


def test_a_full_size_sheet_is_scored_in_tiles_and_every_symbol_reported_once() -> None:
    from pipeline_steps.detector.engine import TILE_OVERLAP_PX, TILE_PX, predict, tile_starts

    height, width = 5000, 7000
    sheet = torch.zeros((3, height, width), dtype=torch.uint8)
    seams = [start + TILE_PX for start in tile_starts(width)[:-1]]
    truth = []
    for index, x in enumerate([40, seams[0] - 50, seams[0] - 10, seams[1] - 90, seams[2] - 40, width - 100]):
        y = 100 + index * 700
        sheet[:, y : y + 80, x : x + 80] = 255
        truth.append([x, y, x + 80, y + 80])
    assert TILE_OVERLAP_PX > 80
    prediction = predict(_MarkerDetector(), sheet, ["1"])
    found = sorted(prediction.boxes.astype(int).tolist())
    assert found == sorted(truth), "each symbol once, whole, wherever the seams fall"


class _EdgeDetector(torch.nn.Module):
    """What FCOS returns for a box predicted on the padding past the right edge: clipped to zero width."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        _, height, width = images[0].shape
        boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0], [width, 10.0, width, 40.0], [20.0, height, 60.0, height]])
        return [{"boxes": boxes, "scores": torch.full((3,), 0.9), "labels": torch.ones(3, dtype=torch.int64)}]


def test_boxes_clipped_to_nothing_at_the_sheet_edge_are_not_reported() -> None:
    from pipeline_steps.detector.engine import predict

    prediction = predict(_EdgeDetector(), torch.zeros((3, 300, 400), dtype=torch.uint8), ["1"])
    assert prediction.boxes.tolist() == [[10.0, 10.0, 50.0, 40.0]]


def test_training_keeps_a_bounded_number_of_decoded_sheets(data: tuple[Path, Path]) -> None:
    from pipeline_steps.detector.data import read_sheet_pixels

    sheets = load_sheets(data[0])
    one_sheet = read_sheet_pixels(sheets[0].path).numel()
    sampler = CropSampler(
        sheets, sorted({label for s in sheets for label in s.labels}), 96, 0, cache_bytes=one_sheet * 3
    )
    for sheet in sheets:
        sampler.sample(sheet)
    assert sum(image.numel() for image in sampler._cache.values()) <= max(
        one_sheet * 3, max(read_sheet_pixels(s.path).numel() for s in sheets)
    )
    assert len(sampler._cache) < len(sheets)


def test_grey_sheets_are_cached_as_one_channel_and_cropped_as_rgb(tmp_path: Path) -> None:
    from PIL import Image

    from pipeline_steps.detector.data import read_image, read_image_bytes, read_sheet_pixels

    rng = np.random.default_rng(0)
    grey = np.where(rng.random((120, 160)) < 0.1, 0, 255).astype(np.uint8)
    Image.fromarray(grey, "L").convert("RGB").save(tmp_path / "grey.png")
    colour = np.stack([grey, grey, 255 - grey], axis=-1)
    Image.fromarray(colour, "RGB").save(tmp_path / "colour.png")
    assert read_sheet_pixels(tmp_path / "grey.png").shape == (1, 120, 160)
    assert read_sheet_pixels(tmp_path / "colour.png").shape == (3, 120, 160)
    # JPEG: a grey sheet is decoded straight to luma, which must equal the RGB decode exactly.
    Image.fromarray(grey, "L").convert("RGB").save(tmp_path / "grey.jpg", quality=90)
    Image.fromarray(colour, "RGB").save(tmp_path / "colour.jpg", quality=90)
    rgb = read_image_bytes(tmp_path / "grey.jpg")
    assert torch.equal(read_sheet_pixels(tmp_path / "grey.jpg"), rgb[:1]) and torch.equal(rgb[0], rgb[2])
    assert read_sheet_pixels(tmp_path / "colour.jpg").shape == (3, 120, 160)

    for name in ("grey.png", "colour.png"):
        sheet = Sheet(tmp_path / name, 160, 120, np.zeros((0, 4), dtype=np.float32), ())
        sampler = CropSampler([sheet], ["1"], 200, seed=0)
        crop, _ = sampler.sample(sheet)  # the crop is the whole sheet, maybe flipped or turned
        whole = read_image(tmp_path / name)
        variants = [whole, whole.flip(-1), whole.flip(-2), whole.flip(-1).flip(-2)]
        variants += [v.transpose(-1, -2) for v in variants]
        assert crop.shape[0] == 3 and any(crop.shape == v.shape and torch.equal(crop, v) for v in variants)


def _symbol_draws(sampler: CropSampler, sheet: Sheet, draws: int = 4000) -> dict[str, float]:
    picks = Counter(sheet.labels[sampler.pick_symbol(sheet)] for _ in range(draws))
    return {label: count / draws for label, count in picks.items()}


def test_rare_classes_get_crops_by_the_square_root_of_their_rarity(tmp_path: Path) -> None:
    boxes = np.tile(np.array([[10, 10, 40, 40]], dtype=np.float32), (10, 1))
    sheet = Sheet(tmp_path / "unused.png", 100, 100, boxes, ("common",) * 9 + ("rare",))
    shares = _symbol_draws(CropSampler([sheet], ["common", "rare"], 64, seed=0), sheet)
    # weights 1/sqrt(share): common 1/sqrt(0.9) each, rare 1/sqrt(0.1) -> the rare one is 0.25 of the draws
    assert shares["rare"] == pytest.approx(0.25, abs=0.03)


def test_mistake_crops_keep_their_order_and_decode_each_sheet_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from pipeline_steps.detector import report
    from pipeline_steps.evaluation.metrics import Mistake

    sheets = []
    for index in range(2):
        path = tmp_path / f"sheet{index}.png"
        Image.new("RGB", (300, 200), "white").save(path)
        sheets.append(Sheet(path, 300, 200, np.zeros((0, 4), dtype=np.float32), ()))
    box = np.array([40, 40, 80, 80], dtype=np.float32)
    mistakes = [Mistake(0, box, "1", 0.9), Mistake(1, box, "2", 0.8), Mistake(0, box, "3", 0.0)]
    opened = []
    real_open = Image.open

    def open_recorded(path: Path) -> Image.Image:
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr(report.Image, "open", open_recorded)
    html_text = report._crops(sheets, mistakes, tmp_path, "mistake", {"3": "Valves/Check valve"})
    assert sorted(opened) == [sheets[0].path, sheets[1].path]
    names = [f"mistake_{n:02d}.png" for n in range(3)]
    assert [html_text.index(name) for name in names] == sorted(html_text.index(name) for name in names)
    assert all((tmp_path / name).is_file() for name in names) and "missed Check valve" in html_text


def test_a_warm_start_keeps_known_class_rows_adds_fresh_ones_and_drops_gone_ones(trained: Path) -> None:
    """The champion knew its classes; the new model has one more and one fewer."""
    from pipeline_steps.detector.model import build_detector
    from pipeline_steps.detector.warm_start import CLASS_ROWS, warm_start

    old_classes = json.loads((trained / "metrics.json").read_text())["classes"]
    gone, kept = old_classes[0], old_classes[1:]
    new_classes = [*kept, "999"]
    saved = torch.load(trained / "artifacts" / "weights.pt", weights_only=True)
    torch.manual_seed(0)
    model = build_detector(len(new_classes))
    fresh = {name: model.state_dict()[name].clone() for name in CLASS_ROWS}
    seeded = warm_start(model, trained, new_classes)
    assert (seeded.kept, seeded.added, seeded.dropped) == (kept, ["999"], [gone])
    state = model.state_dict()
    for name in CLASS_ROWS:
        for new_row, c in enumerate(new_classes, start=1):
            expected = saved[name][old_classes.index(c) + 1] if c in kept else fresh[name][new_row]
            assert torch.equal(state[name][new_row], expected), (name, c)
    backbone = next(name for name in saved if name.startswith("backbone."))
    assert torch.equal(state[backbone], saved[backbone])
    assert "new classes 999 start fresh" in seeded.describe() and f"classes {gone} are gone" in seeded.describe()


def test_a_champion_of_another_architecture_means_training_from_scratch_and_saying_why(
    trained: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    older = tmp_path / "older"
    shutil.copytree(trained, older)
    config = json.loads((older / "artifacts" / "config.json").read_text())
    (older / "artifacts" / "config.json").write_text(json.dumps({**config, "architecture": "fcos-symbol"}))
    output = tmp_path / "model"
    args = ["--train-data", str(data[0]), "--val-data", str(data[1]), "--output", str(output), "--epochs", "1"]
    assert train_step.main([*args, "--warm-start-model", str(older)]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["warm_start"] is None and "architecture 'fcos-symbol'" in metrics["warm_start_skipped"]


def test_warm_start_runs_the_warm_epochs_from_the_champions_weights(
    trained: Path, data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "model"
    args = ["--train-data", str(data[0]), "--val-data", str(data[1]), "--output", str(output)]
    assert train_step.main([*args, "--epochs", "5", "--warm-epochs", "2", "--warm-start-model", str(trained)]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["epochs"] == metrics["planned_epochs"] == 2 and not metrics["budget_cut"]
    assert metrics["warm_start"].startswith("warm start from the champion's weights")
    assert "warm start from" in capsys.readouterr().out
    assert "warm start from" in (output / "report" / "report.html").read_text()


def test_a_first_model_starts_from_the_base_model_unless_told_and_the_log_says_the_pace(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--train-data", str(data[0]), "--val-data", str(data[1]), "--epochs", "1"]
    assert train_step.main([*args, "--output", str(tmp_path / "based")]) == 0
    based = capsys.readouterr().out
    assert "started from the base model for P&ID symbols" in based and "every class row fresh" in based
    assert re.search(r"ms per step, torch threads [\d.]+, machine load", based), "the pace, threads and load"
    assert (
        "pace: " in based
        and "started from the base model" in (tmp_path / "based" / "report" / "report.html").read_text()
    )
    assert train_step.main([*args, "--output", str(tmp_path / "noise"), "--from-scratch"]) == 0
    assert "trained from scratch" in capsys.readouterr().out


def test_the_time_budget_caps_the_epochs_and_the_cut_is_reported(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "model"
    args = ["--train-data", str(data[0]), "--val-data", str(data[1]), "--output", str(output)]
    assert train_step.main([*args, "--epochs", "1000", "--max-minutes", "0.02"]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["budget_cut"] and metrics["epochs"] < metrics["planned_epochs"] == 1000
    assert metrics["seconds"] > metrics["training_seconds"] > 0, "validation is timed apart from the budget"
    assert "the time budget cut training short" in capsys.readouterr().out
    assert "the time budget cut training short" in (output / "report" / "report.html").read_text()


def test_validation_runs_by_epochs_or_by_budget_so_a_budget_bound_run_keeps_its_curve() -> None:
    from pipeline_steps.detector.engine import evaluation_due

    assert [e for e in range(1, 21) if evaluation_due(e, 20, 4, budget_used=0.0, evaluated=0)] == [5, 10, 15, 20]
    # planned far beyond the budget: the epochs never call for it, each quarter of the budget does
    assert not evaluation_due(7, 1_000_000, 4, budget_used=0.2, evaluated=0)
    assert evaluation_due(8, 1_000_000, 4, budget_used=0.26, evaluated=0)
    assert not evaluation_due(9, 1_000_000, 4, budget_used=0.3, evaluated=1)
    assert evaluation_due(15, 1_000_000, 4, budget_used=0.51, evaluated=1)


def test_the_learning_rate_anneals_by_epochs_or_budget_whichever_is_further() -> None:
    from pipeline_steps.detector.engine import _cosine

    assert _cosine(1.0, 0.0, warm_up=True) == pytest.approx(0.3)
    assert _cosine(1.0, 0.0, warm_up=False) == pytest.approx(1.0)
    assert _cosine(1.0, 1.0, warm_up=False) == pytest.approx(0.05)
    assert _cosine(1.0, 2.0, warm_up=False) == pytest.approx(0.05), "a run past its plan stays annealed"


def test_class_names_with_dollar_signs_are_drawn_literally(data: tuple[Path, Path], tmp_path: Path) -> None:
    """Matplotlib parses text between two '$' as a formula; a class name is data, never markup."""
    classes = {label for sheet in load_sheets(data[0]) for label in sheet.labels}
    label_map = {c: f"Instrument/Valve/cost $\\notacommand{{{c}}}$ valve" for c in classes}
    (tmp_path / "label_map.json").write_text(json.dumps(label_map))
    output = tmp_path / "model"
    args = ["--train-data", str(data[0]), "--val-data", str(data[1]), "--output", str(output), "--epochs", "1"]
    assert train_step.main([*args, "--label-map", str(tmp_path / "label_map.json")]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["report"] and (output / "report" / "confusion_matrix.png").is_file()
    assert "cost $\\notacommand" in (output / metrics["report"]).read_text()


def test_a_report_that_cannot_be_drawn_never_fails_training(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline_steps.detector import report

    def broken(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("the plotting library gave up")

    monkeypatch.setattr(report, "write_report", broken)
    output = tmp_path / "model"
    args = ["--train-data", str(data[0]), "--val-data", str(data[1]), "--output", str(output), "--epochs", "1"]
    assert train_step.main(args) == 0
    assert (output / "MLmodel").is_file() and json.loads((output / "metrics.json").read_text())["report"] is None


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--epochs", "0"),
        ("--epochs", "-3"),
        ("--epochs", "1.5"),
        ("--warm-epochs", "0"),
        ("--warm_epochs", "-1"),
        ("--max-minutes", "0"),
        ("--max-minutes", "-1"),
        ("--max-minutes", "nan"),
        ("--max-minutes", "inf"),
        ("--seed", "-1"),
        ("--seed", str(2**32)),
    ],
)
def test_out_of_range_numbers_are_refused_naming_the_flag_before_anything_is_read(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--epochs 0` and `--max-minutes 0` ended in ZeroDivisionError; `--max-minutes -1` trained an epoch."""
    missing = tmp_path / "never read"
    with pytest.raises(SystemExit) as refused:
        train_step.main(["--train-data", str(missing), "--output", str(tmp_path / "m"), flag, value])
    assert refused.value.code == 2
    complaint = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag.lstrip("-").replace("_", "-") in complaint and repr(value) in complaint, complaint


def test_the_number_flags_take_what_the_settings_allow() -> None:
    from pipeline_steps._cli import bounded, seed

    assert bounded("LOCAL_TRAINING_EPOCHS")("1") == 1 and seed("0") == 0 and seed(str(2**32 - 1)) == 2**32 - 1
    assert bounded("LOCAL_TRAINING_MINUTES")("0.02") == 0.02, "LOCAL_TRAINING_MINUTES: gt=0"


def test_the_trainers_flags_carry_the_local_training_settings_with_their_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.settings import TrainingSettings

    args = train_step.build_parser().parse_args(["--train-data", str(tmp_path), "--output", str(tmp_path / "m")])
    fields = TrainingSettings.model_fields
    assert args.max_minutes == fields["LOCAL_TRAINING_MINUTES"].default
    assert args.epochs == fields["LOCAL_TRAINING_EPOCHS"].default
    assert args.warm_epochs == fields["LOCAL_WARM_START_EPOCHS"].default
    with pytest.raises(SystemExit):
        train_step.main(["--train-data", str(tmp_path), "--output", str(tmp_path / "m"), "--max-minutes", "inf"])
    assert "(LOCAL_TRAINING_MINUTES), got 'inf'" in capsys.readouterr().err
