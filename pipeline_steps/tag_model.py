"""Step 6, tag model: compare the new version with the best one and move the `best_model` tag.

    python -m pipeline_steps.tag_model --model-base-name pid-symbol-detector \
        --model-metadata-path <register_model output> --best-model-metadata-path <output folder>

The newcomer wins only when its mAP@0.5 beats the best by more than --min-map-improvement (default 0:
a tie keeps the incumbent). When the two were validated on different data the decision says so; in
local mode both are re-scored on the newcomer's validation set first and the decision uses those
numbers. Idempotent, and never more than one version tagged best: local tag steps take a lock;
on Azure ML the step re-reads after writing and repairs. `best_model_metadata.json` records the
chosen version, the previous best, both scores and the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline_steps._cli import add_flag
from pipeline_steps.register_model import PER_CLASS_TAG
from retrainer.promotion import PROMOTION_RECORD_FILE, Comparison, PromotionRecord, decide_promotion
from retrainer.settings import SettingsError, get_settings
from retrainer.workspace import BEST_MODEL_TAG, ModelRegistry, ModelVersion, open_registry

SCORE_TAG = "mean_average_precision"


@dataclass(frozen=True)
class Rescored:
    """Both models scored on the same validation set: mAP@0.5 and per-class AP@0.5."""

    candidate_score: float
    incumbent_score: float
    candidate_per_class: dict[str, float]
    incumbent_per_class: dict[str, float]


Rescorer = Callable[[ModelVersion, ModelVersion], Rescored]


class RescoreUnavailable(Exception):
    """The two models cannot be scored on the same data here; the recorded scores decide, with a note."""


class TagError(ValueError):
    """The candidate cannot be compared (not registered, no score)."""


def score_of(version: ModelVersion) -> float:
    try:
        return float(version.tags[SCORE_TAG])
    except (KeyError, ValueError):
        raise TagError(f"{version.name}:{version.version} has no numeric {SCORE_TAG} tag") from None


def repair_best_tags(registry: ModelRegistry, versions: list[ModelVersion]) -> list[str]:
    """Leave the best tag on one version only (highest score, then the oldest); returns the versions untagged."""
    tagged = [v for v in versions if v.is_best]
    if len(tagged) <= 1:
        return []
    keep = max(tagged, key=lambda v: (score_of(v), -int(v.version)))
    removed = [v.version for v in tagged if v.version != keep.version]
    for version in removed:
        registry.set_model_tags(keep.name, version, {BEST_MODEL_TAG: "false"})
    return removed


def choose_best(
    registry: ModelRegistry, name: str, candidate_version: str, min_improvement: float, rescore: Rescorer | None
) -> PromotionRecord:
    with registry.promotion_lock(name):
        versions = registry.model_versions(name)
        repaired = repair_best_tags(registry, versions)
        versions = registry.model_versions(name) if repaired else versions
        by_version = {v.version: v for v in versions}
        if candidate_version not in by_version:
            raise TagError(f"{name}:{candidate_version} is not registered")
        candidate = by_version[candidate_version]
        incumbent = next((v for v in versions if v.is_best), None)
        record = _decide(registry, candidate, incumbent, min_improvement, rescore)
        after = registry.model_versions(name)
        repaired += repair_best_tags(registry, after)  # a racing step on a lock-less registry
        record.repaired_best_tags_on_versions = repaired
        record.best_version = next((v.version for v in registry.model_versions(name) if v.is_best), None)
    return record


def _per_class(version: ModelVersion | None) -> dict[str, float]:
    if version is None or not version.tags.get(PER_CLASS_TAG):
        return {}
    try:
        values = json.loads(version.tags[PER_CLASS_TAG])
    except json.JSONDecodeError:
        return {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, (int, float))}


def _report_link(version: ModelVersion) -> str | None:
    """The evaluation report beside a locally stored model (AutoML models have their run page instead)."""
    report = Path(version.uri) / "report" / "report.html"
    return report.as_uri() if not version.uri.startswith("azureml:") and report.is_file() else None


def _decide(
    registry: ModelRegistry,
    candidate: ModelVersion,
    incumbent: ModelVersion | None,
    min_improvement: float,
    rescore: Rescorer | None,
) -> PromotionRecord:
    previous = incumbent.version if incumbent else None
    if incumbent is not None and incumbent.version == candidate.version:
        score = score_of(candidate)
        return PromotionRecord(
            name=candidate.name,
            candidate_version=candidate.version,
            previous_best_version=previous,
            chosen_version=candidate.version,
            promoted=False,
            candidate_score=score,
            previous_best_score=score,
            min_map_improvement=min_improvement,
            reason="already the best model; nothing to change",
        )
    candidate_score = score_of(candidate)
    incumbent_score = score_of(incumbent) if incumbent else None
    per_class = (_per_class(candidate), _per_class(incumbent))
    comparison = _comparison(candidate, incumbent)
    if incumbent is not None and not comparison.same_validation_data and rescore is not None:
        try:
            rescored = rescore(candidate, incumbent)
            candidate_score, incumbent_score = rescored.candidate_score, rescored.incumbent_score
            per_class = (rescored.candidate_per_class, rescored.incumbent_per_class)
            comparison.rescored, comparison.rescored_on = True, candidate.tags.get("val_data")
        except RescoreUnavailable as reason:
            comparison.rescore_skipped = str(reason)
    decision = decide_promotion(candidate_score, incumbent_score, min_improvement)
    if decision.promote:
        if incumbent is not None:  # untag first: for a moment no version is best, never two
            registry.set_model_tags(incumbent.name, incumbent.version, {BEST_MODEL_TAG: "false"})
        registry.set_model_tags(candidate.name, candidate.version, {BEST_MODEL_TAG: "true"})
    chosen = candidate if decision.promote or incumbent is None else incumbent
    return PromotionRecord(
        candidate_per_class=per_class[0],
        previous_per_class=per_class[1],
        candidate_report=_report_link(candidate),
        name=candidate.name,
        candidate_version=candidate.version,
        previous_best_version=previous,
        chosen_version=chosen.version,
        promoted=decision.promote,
        candidate_score=decision.candidate_score,
        previous_best_score=decision.incumbent_score,
        min_map_improvement=min_improvement,
        reason=decision.reason,
        comparison=comparison,
    )


def _comparison(candidate: ModelVersion, incumbent: ModelVersion | None) -> Comparison:
    if incumbent is None:
        return Comparison()
    same = bool(candidate.tags.get("val_data")) and candidate.tags.get("val_data") == incumbent.tags.get("val_data")
    note = (
        ""
        if same
        else (
            f"validated on different data ({incumbent.tags.get('val_data', 'unknown')} vs "
            f"{candidate.tags.get('val_data', 'unknown')})"
        )
    )
    return Comparison(same_validation_data=same, note=note)


def local_rescorer(registry: ModelRegistry) -> Rescorer | None:
    """Re-score both models on the newcomer's validation set (local mode, where the data is on disk)."""

    def rescore(candidate: ModelVersion, incumbent: ModelVersion) -> Rescored:
        from pipeline_steps.detector.pyfunc import IncompatibleModelError
        from pipeline_steps.detector.scoring import score_model

        val_uri = candidate.tags.get("val_data_uri", "")
        if not val_uri.startswith("file://"):
            raise RescoreUnavailable(f"the newcomer's validation data is not on this machine ({val_uri or 'no URI'})")
        val_folder = Path(unquote(urlsplit(val_uri).path))
        with tempfile.TemporaryDirectory() as scratch:
            try:
                new, old = (
                    score_model(registry.local_model_path(v, Path(scratch)), val_folder) for v in (candidate, incumbent)
                )
            except IncompatibleModelError as error:  # an incumbent from an older detector architecture
                raise RescoreUnavailable(str(error)) from error
        return Rescored(
            new.metrics["mean_average_precision"],
            old.metrics["mean_average_precision"],
            {c: round(v["ap50"], 4) for c, v in new.per_class.items()},
            {c: round(v["ap50"], 4) for c, v in old.per_class.items()},
        )

    return rescore


def append_comparison(report: Path, record: PromotionRecord) -> None:
    """Add the champion and the challenger, per class, with the decision, to the challenger's report."""
    import html

    classes = sorted(set(record.candidate_per_class) | set(record.previous_per_class), key=lambda c: (len(c), c))
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{record.previous_per_class.get(c, float('nan')):.3f}</td>"
        f"<td>{record.candidate_per_class.get(c, float('nan')):.3f}</td>"
        f"<td>{record.candidate_per_class.get(c, 0) - record.previous_per_class.get(c, 0):+.3f}</td></tr>"
        for c in classes
    )
    same = (
        f"both scored on {html.escape(record.comparison.rescored_on or '')}"
        if record.comparison.rescored
        else html.escape(record.comparison.note or "scores as recorded at training")
    )
    section = (
        f'<h2 id="champion-challenger">Champion (version {html.escape(str(record.previous_best_version))}) and '
        f"challenger (version {html.escape(record.candidate_version)})</h2>"
        f"<p><b>{'promoted' if record.promoted else 'the champion stays'}</b>: {html.escape(record.reason)} "
        f"({same})</p><table><tr><th>class</th><th>champion AP@0.5</th><th>challenger AP@0.5</th>"
        f"<th>difference</th></tr>{rows}</table>"
    )
    text = report.read_text(encoding="utf-8")
    if 'id="champion-challenger"' not in text:
        report.write_text(text.replace("</body>", section + "</body>"), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_steps.tag_model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flag(parser, "model-base-name", env="MODEL_BASE_NAME", default="pid-symbol-detector")
    add_flag(parser, "model-metadata-path", required=True, type=Path, help="register_model output folder")
    add_flag(parser, "best-model-metadata-path", required=True, type=Path, help="output folder")
    add_flag(
        parser,
        "min-map-improvement",
        env="MIN_MAP_IMPROVEMENT",
        type=float,
        default=0.0,
        help="how much the new model's mAP@0.5 must beat the best model's to be promoted",
    )
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        metadata = json.loads((args.model_metadata_path / "model_metadata.json").read_text())
        registry = open_registry(settings)
        rescore = local_rescorer(registry) if settings.backend() == "local" else None
        record = choose_best(
            registry, args.model_base_name, str(metadata["version"]), args.min_map_improvement, rescore
        )
    except (TagError, SettingsError, FileNotFoundError, KeyError) as error:
        print(f"tag model failed: {error}", file=sys.stderr)
        return 1
    args.best_model_metadata_path.mkdir(parents=True, exist_ok=True)
    (args.best_model_metadata_path / PROMOTION_RECORD_FILE).write_text(record.to_json())
    if record.candidate_report and record.previous_best_version:
        append_comparison(Path(unquote(urlsplit(record.candidate_report).path)), record)
    print(f"best model: {record.name} version {record.best_version} ({record.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
