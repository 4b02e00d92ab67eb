"""Evaluation report written beside the model: an HTML page with PNGs.

Validation sheets with ground truth (green) and predictions (red, with scores), the per-class AP
table and the precision-recall curve at IoU 0.5.
"""

from __future__ import annotations

import html
from pathlib import Path

from PIL import Image, ImageDraw

from pipeline_steps.detector.data import Sheet
from pipeline_steps.detector.evaluation import Evaluation, Prediction

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
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pictures = [
        _draw(sheet, prediction, folder / f"val_{index:02d}.png", score_threshold)
        for index, (sheet, prediction) in enumerate(zip(sheets[:max_images], predictions, strict=False))
    ]
    curve = _pr_curve(evaluation, folder / "precision_recall.png")
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{html.escape(class_names.get(c, ''))}</td>"
        f"<td>{v['ap50']:.3f}</td><td>{v['ap50_95']:.3f}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td></tr>"
        for c, v in evaluation.per_class.items()
    )
    metrics = "".join(f"<li>{html.escape(k)}: <b>{v:.4f}</b></li>" for k, v in evaluation.metrics.items())
    epochs = "".join(
        f"<tr><td>{int(r['epoch'])}</td><td>{r['minutes']:.1f}</td><td>{r['loss']:.3f}</td>"
        f"<td>{r.get('val_mean_average_precision', float('nan')):.3f}</td></tr>"
        for r in history
    )
    images = "".join(
        f'<figure><img src="{p.name}" width="640"><figcaption>{p.stem}</figcaption></figure>' for p in pictures
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Detector evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:0 1em 1em 0}}</style></head><body>
<h1>Detector evaluation ({len(sheets)} validation sheets)</h1><ul>{metrics}</ul>
<h2>Per-class average precision</h2>
<table><tr><th>class</th><th>name</th><th>AP@0.5</th><th>AP@[.5:.95]</th><th>precision</th><th>recall</th></tr>{rows}</table>
<h2>Precision-recall (IoU 0.5, mean over classes)</h2><img src="{curve.name}" width="480">
<h2>Training</h2><table><tr><th>epoch</th><th>minutes</th><th>loss</th><th>val mAP@0.5</th></tr>{epochs}</table>
<h2>Validation sheets: ground truth in green, predictions (score &ge; {score_threshold}) in red</h2>{images}
</body></html>"""
    path = folder / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


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
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

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
