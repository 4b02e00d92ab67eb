"""Evaluation report written beside the model: an HTML page with PNGs.

Metrics and per-class AP with class names, the learning curve, the confusion matrix over classes and
background at IoU 0.5 (look-alike symbols show as off-diagonal cells), the worst false detections
and misses as crops, the precision-recall curve, and validation sheets with ground truth (green) and
predictions (red, with scores).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from pipeline_steps.evaluation.metrics import Confusion, Evaluation, Mistake, Prediction, confusion
from shared.evaluation.sheets import Sheet
from shared.mltable_io import class_sort_key

REPORT_FILE = "report.html"


def write_report(
    folder: Path,
    sheets: list[Sheet],
    predictions: list[Prediction],
    evaluation: Evaluation,
    class_names: dict[str, str],
    history: list[dict[str, float]],
    max_images: int = 8,
    score_threshold: float = 0.3,
    notes: list[str] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    classes = sorted(evaluation.per_class, key=class_sort_key)
    pictures = [
        _draw(sheet, prediction, folder / f"val_{index:02d}.png", score_threshold)
        for index, (sheet, prediction) in enumerate(zip(sheets[:max_images], predictions, strict=False))
    ]
    curve = _pr_curve(evaluation, folder / "precision_recall.png")
    learning = _learning_curve(history, folder / "learning_curve.png")
    confused = confusion(sheets, predictions, classes, score_threshold)
    matrix = _confusion_png(confused, class_names, folder / "confusion_matrix.png")
    false_detections = _crops(sheets, confused.false_positives[:12], folder, "false_detection", class_names)
    misses = _crops(sheets, confused.false_negatives[:12], folder, "missed", class_names)

    def name(class_id: str) -> str:
        return class_names.get(class_id, "")

    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{html.escape(name(c))}</td>"
        f"<td>{v['ap50']:.3f}</td><td>{v['ap50_95']:.3f}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td></tr>"
        for c, v in sorted(evaluation.per_class.items(), key=lambda item: item[1]["ap50"])
    )
    metrics = (
        "".join(f"<li>{html.escape(k)}: <b>{v:.4f}</b></li>" for k, v in evaluation.metrics.items())
        if sheets
        else "<li>not validated: no validation sheets, so no figures</li>"
    )
    training_notes = "".join(f'<p class="training">{html.escape(note)}</p>' for note in notes or [])
    images = "".join(
        f'<figure><img src="{p.name}" width="640" alt="{p.stem}"><figcaption>{p.stem}</figcaption></figure>'
        for p in pictures
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Detector evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}figure{{display:inline-block;margin:0 1em 1em 0;vertical-align:top}}
figcaption{{font-size:.8em;color:#444;max-width:200px}}</style></head><body>
<h1>Detector evaluation ({len(sheets)} validation sheets)</h1>{training_notes}<ul>{metrics}</ul>
<h2>Per-class average precision (weakest first)</h2>
<table id="per-class"><tr><th>class</th><th>name</th><th>AP@0.5</th><th>AP@[.5:.95]</th>
<th>precision</th><th>recall</th></tr>{rows}</table>
<h2>Learning curve</h2>{_img(learning, "learning-curve", 720, "loss and validation mAP per epoch")}
<h2>Confusion matrix (IoU 0.5, score &ge; {score_threshold})</h2>
<p>Rows: the true symbol; columns: what the detector said. The last row counts false detections, the last
column missed symbols; look-alikes show as off-diagonal cells.</p>
{_img(matrix, "confusion-matrix", 760, "confusion matrix")}
<h2>Highest-scoring false detections</h2><div id="false-detections">{false_detections or "<p>none</p>"}</div>
<h2>Missed symbols</h2><div id="misses">{misses or "<p>none</p>"}</div>
<h2>Precision-recall (IoU 0.5, mean over classes)</h2>{_img(curve, "precision-recall", 480, "precision-recall")}
<h2>Validation sheets: ground truth in green, predictions (score &ge; {score_threshold}) in red</h2>{images}
</body></html>"""
    path = folder / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def _img(path: Path | None, element_id: str, width: int, alt: str) -> str:
    if path is None:
        return f'<p id="{element_id}">not enough data</p>'
    return f'<img id="{element_id}" src="{path.name}" width="{width}" alt="{html.escape(alt)}">'


def _learning_curve(history: list[dict[str, float]], path: Path) -> Path | None:
    """Training loss and validation mAP@0.5 per epoch (epochs without a validation pass show loss only)."""
    import math

    rows = [row for row in history if math.isfinite(row.get("loss", float("nan")))]
    if not rows:
        return None
    pyplot = _pyplot()
    figure, loss_axes = pyplot.subplots(figsize=(7.2, 3.2), dpi=100)
    epochs = [int(row["epoch"]) for row in rows]
    loss_axes.plot(epochs, [row["loss"] for row in rows], color="tab:gray", marker=".", label="training loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    scored = [row for row in rows if math.isfinite(row.get("val_mean_average_precision", float("nan")))]
    map_axes = loss_axes.twinx()
    map_axes.plot(
        [int(row["epoch"]) for row in scored],
        [row["val_mean_average_precision"] for row in scored],
        color="tab:blue",
        marker="o",
        label="validation mAP@0.5",
    )
    map_axes.set_ylim(0, 1)
    map_axes.set_ylabel("validation mAP@0.5", color="tab:blue")
    if scored:
        last = rows[-1]
        loss_axes.set_title(f"{len(rows)} epochs in {last.get('minutes', 0):.1f} min")
    figure.legend(loc="lower center", ncol=2, fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path)
    pyplot.close(figure)
    return path


def _confusion_png(confused: Confusion, class_names: dict[str, str], path: Path) -> Path:
    pyplot = _pyplot()
    labels = [class_names.get(c, c).split("/")[-1][:22] for c in confused.classes] + ["background"]
    size = max(4.0, 0.42 * len(labels) + 2.5)
    figure, axes = pyplot.subplots(figsize=(size, size * 0.9), dpi=100)
    matrix = confused.matrix
    axes.imshow(matrix, cmap="Blues")
    # Class names are data: `parse_math=False` draws "$" as a dollar sign, never as a formula to parse.
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7, parse_math=False)
    axes.set_yticks(range(len(labels)), labels, fontsize=7, parse_math=False)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    peak = max(int(matrix.max()), 1)
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            if matrix[row, column]:
                colour = "white" if matrix[row, column] > peak / 2 else "black"
                axes.text(column, row, str(matrix[row, column]), ha="center", va="center", fontsize=6, color=colour)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return path


def _crops(sheets: list[Sheet], mistakes: list[Mistake], folder: Path, kind: str, class_names: dict[str, str]) -> str:
    """Each mistake cropped from its sheet with some context, its box outlined; each sheet decoded once."""
    figures: dict[int, str] = {}
    by_sheet: dict[int, list[int]] = {}
    for number, mistake in enumerate(mistakes):
        by_sheet.setdefault(mistake.sheet_index, []).append(number)
    for sheet_index, numbers in by_sheet.items():
        sheet = sheets[sheet_index]
        with Image.open(sheet.path) as source:
            image = source.convert("RGB")
        for number in numbers:
            mistake = mistakes[number]
            x1, y1, x2, y2 = (float(v) for v in mistake.box)
            margin = max(24.0, 0.6 * max(x2 - x1, y2 - y1))
            box = (
                int(max(0, x1 - margin)),
                int(max(0, y1 - margin)),
                int(min(image.width, x2 + margin)),
                int(min(image.height, y2 + margin)),
            )
            crop = image.crop(box)
            ImageDraw.Draw(crop).rectangle(
                [x1 - box[0], y1 - box[1], x2 - box[0], y2 - box[1]], outline=(220, 0, 0), width=2
            )
            crop.thumbnail((200, 200))
            name = f"{kind}_{number:02d}.png"
            crop.save(folder / name)
            what = class_names.get(mistake.label, mistake.label).split("/")[-1]
            caption = f"{what} {mistake.score:.2f}" if mistake.score else f"missed {what}"
            figures[number] = (
                f'<figure><img src="{name}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                f"<br>{html.escape(sheet.path.name)}</figcaption></figure>"
            )
    return "".join(figures[number] for number in range(len(mistakes)))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _draw(sheet: Sheet, prediction: Prediction, path: Path, score_threshold: float) -> Path:
    with Image.open(sheet.path) as source:
        image = source.convert("RGB")
    draw = ImageDraw.Draw(image)
    for box, label in zip(sheet.boxes, sheet.labels, strict=True):
        draw.rectangle([float(v) for v in box], outline=(0, 170, 0), width=3)
        draw.text((float(box[0]), float(box[3]) + 1), label, fill=(0, 130, 0))
    for box, score, label in zip(prediction.boxes, prediction.scores, prediction.labels, strict=True):
        if score >= score_threshold:
            draw.rectangle([float(v) for v in box], outline=(220, 0, 0), width=1)
            draw.text((float(box[0]), float(box[1]) - 11), f"{label} {score:.2f}", fill=(220, 0, 0))
    image.save(path)
    return path


def _pr_curve(evaluation: Evaluation, path: Path) -> Path:
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(4.8, 3.6), dpi=100)
    axes.plot(evaluation.pr_curve["recall"], evaluation.pr_curve["precision"], color="tab:red")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(f"mAP@0.5 = {evaluation.metrics['mean_average_precision']:.3f}")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return path
