"""Step 4 locally: train the symbol detector on the CPU and write an MLflow model folder.

    python -m pipeline_steps.train --train-data <MLTable folder> --val-data <MLTable folder> \
        --output <folder> --epochs 60 --max-minutes 15 [--warm-start-model <champion's model folder>] --seed 0 \
        [--from-scratch]

`--output` becomes an MLflow model folder (MLmodel at its root, like AutoML's `best_model` output)
with `metrics.json` (mean_average_precision = mAP@0.5, coco_map, precision, recall, per-class AP, and
`val_images`, the validation sheets they were measured on: with none, the figures are null, never 0)
and `report/report.html` beside it. The model scores like an AutoML for Images model (base64
images in, normalised boxes out). The work is `--epochs` (from scratch) or `--warm-epochs` (from the
champion's weights, `--warm-start-model`), the same on any machine; with no champion, training starts from
the base model that ships with the detector (trained once on P&ID symbols, every class row fresh), or
from noise with `--from-scratch`; `--max-minutes` only caps it,
and when it cuts training short the log, `metrics.json` (`budget_cut`) and the report say so. With
the same seed and no cut, training repeats exactly. A champion that cannot seed the model (another
architecture, or damaged files) means training from scratch, and the log, `metrics.json`
(`warm_start_skipped`) and the report say why. Numbers out of range (`--epochs 0`, `--max-minutes -1`)
are refused before anything is read, with exit code 2. Every epoch's line gives the milliseconds per
step and the machine's load, so a slow run on a busy machine says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline_steps._cli import add_flag, seed
from shared.contracts import TrainingMetrics

if TYPE_CHECKING:
    from pipeline_steps.detector.engine import TrainingConfig

REPORT_FOLDER = "report"


def run_training(
    train_data: Path,
    val_data: Path | None,
    output: Path,
    config: TrainingConfig,
    label_map: dict[str, str] | None = None,
) -> dict:
    from pipeline_steps.detector.engine import describe_epoch, train
    from pipeline_steps.detector.pyfunc import save_detector
    from pipeline_steps.detector.report import write_report
    from shared.evaluation.sheets import class_vocabulary, load_sheets

    train_sheets = load_sheets(train_data)
    val_sheets = load_sheets(val_data) if val_data is not None else []
    if not train_sheets:
        raise ValueError(f"{train_data} has no training records")
    classes = class_vocabulary(train_sheets, val_sheets)
    print(
        f"training on {len(train_sheets)} sheets, validating on {len(val_sheets)}, {len(classes)} classes, "
        f"{config.epochs} epochs from scratch or {config.warm_epochs} from a champion, capped at "
        f"{config.max_minutes:g} min, seed {config.seed}"
    )
    result = train(
        train_sheets, val_sheets, classes, config, on_epoch=lambda row: print(describe_epoch(row), flush=True)
    )
    for note in result.notes():
        print(note, flush=True)
    if output.exists():
        shutil.rmtree(output)
    with tempfile.TemporaryDirectory() as work:
        save_detector(output, result.model, classes, score_threshold=0.05, work_dir=Path(work))
    try:
        report: Path | None = write_report(
            output / REPORT_FOLDER,
            val_sheets,
            result.predictions,
            result.evaluation,
            label_map or {},
            result.history,
            notes=result.notes(),
        )
    except Exception as error:  # a report is for people: one that cannot be drawn never loses a good model
        print(f"the evaluation report could not be written ({type(error).__name__}: {error}); the model is saved")
        report = None
    # Scored on no sheets, every figure would read 0: the model was not validated, and its figures are None.
    measured = bool(val_sheets)
    metrics = TrainingMetrics.model_validate(
        {
            **{name: value if measured else None for name, value in result.evaluation.metrics.items()},
            "per_class": result.evaluation.per_class if measured else {},
            "classes": classes,
            "train_images": len(train_sheets),
            "val_images": len(val_sheets),
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "planned_epochs": result.planned_epochs,
            "budget_cut": result.budget_cut,
            "warm_start": result.warm_start.describe() if result.warm_start else None,
            "warm_start_skipped": result.warm_start_skipped,
            "training_seconds": round(result.training_seconds, 1),
            "seconds": round(result.seconds, 1),  # with validation
            "seed": config.seed,
            "architecture": "FCOS, residual backbone merged top-down to one stride-8 head, native scale",
            "report": f"{REPORT_FOLDER}/{report.name}" if report else None,
        }
    )
    metrics.write(output)
    return metrics.model_dump()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_steps.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_flag(parser, "train-data", required=True, type=Path, help="training MLTable folder")
    add_flag(parser, "val-data", type=Path, default=None, help="validation MLTable folder (optional)")
    add_flag(parser, "output", required=True, type=Path, help="MLflow model folder to write")
    add_flag(parser, "max-minutes", setting="LOCAL_TRAINING_MINUTES", help="time cap (reported when it cuts training)")
    add_flag(parser, "epochs", setting="LOCAL_TRAINING_EPOCHS", help="epochs from scratch")
    add_flag(parser, "warm-epochs", setting="LOCAL_WARM_START_EPOCHS", help="epochs from the champion's weights")
    add_flag(parser, "warm-start-model", type=Path, default=None, help="the champion's MLflow model folder")
    add_flag(parser, "seed", type=seed, default=0)
    add_flag(
        parser, "from-scratch", action="store_true", help="with no champion, start from noise, not from the base model"
    )
    add_flag(parser, "label-map", type=Path, default=None, help="label map JSON, for class names in the report")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    label_map = json.loads(args.label_map.read_text()) if args.label_map else None
    val_data = args.val_data if args.val_data and _has_records(args.val_data) else None
    from pipeline_steps.detector.engine import TrainingConfig

    try:
        config = TrainingConfig(
            max_minutes=args.max_minutes,
            epochs=args.epochs,
            warm_epochs=args.warm_epochs,
            warm_start_from=args.warm_start_model,
            seed=args.seed,
            base_start=not args.from_scratch,
        )
        metrics = run_training(args.train_data, val_data, args.output, config, label_map)
    except (ValueError, FileNotFoundError) as error:
        print(f"training failed: {error}", file=sys.stderr)
        return 1
    if metrics["val_images"]:
        print(
            f"mAP@0.5 {metrics['mean_average_precision']:.3f}, COCO mAP {metrics['coco_map']:.3f}, precision "
            f"{metrics['precision']:.3f}, recall {metrics['recall']:.3f} on {metrics['val_images']} validation sheets "
            f"(best epoch {metrics['best_epoch']})"
        )
    else:
        print("not validated: no validation sheets, so the model has no validation figures (the last epoch is kept)")
    print(f"model: {args.output}  report: {args.output / metrics['report'] if metrics['report'] else 'none'}")
    return 0


def _has_records(folder: Path) -> bool:
    jsonl = folder / "annotations.jsonl" if folder.is_dir() else folder
    return jsonl.exists() and jsonl.stat().st_size > 0


if __name__ == "__main__":
    sys.exit(main())
