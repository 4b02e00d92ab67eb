"""Step 6, tag model: score the new version and the best one on the same holdout, decide, move the `best_model` tag.

    python -m pipeline_steps.tag_model --model-base-name pid-symbol-detector \
        --model-metadata-path <register_model output> --holdout-data-path <split's holdout MLTable> \
        --best-model-metadata-path <output folder> [--min-map-improvement 0] [--confidence-level 0.95] \
        [--bootstrap-resamples 1000] [--max-holdout-images 200] [--scoring-budget-minutes 60] \
        [--scoring-env-manager local|automl] [--automl-python <AutoML's interpreter>]

Both models are scored on the holdout (images neither trained on) by one scorer: MLflow's `models
predict` through the AutoML scoring contract, then COCO mAP@0.5. `--scoring-env-manager` says where a
model's code runs, never in an environment built at run time: `local` in this process (the local
detector), `automl` in `--automl-python`, the interpreter of AutoML's own training environment that the
step's image carries (an AutoML model on Azure ML). Scoring is bounded: a fixed seeded sample of at most
--max-holdout-images, and --scoring-budget-minutes from the step's start (fetching the models included),
after which the images both models scored decide. A paired bootstrap over the scored images gives an
interval for the challenger's mAP@0.5 minus the champion's; the challenger is promoted only when the
interval's lower bound clears --min-map-improvement. Without a holdout (HOLDOUT_FRACTION=0) the recorded
validation scores decide, and the record says so. The decision is applied by a compare-and-swap
(`retrainer/champion/swap.py`): only if the champion and its pin are still the ones it was compared
against once scoring is over; otherwise the champion stays and the record says what changed meanwhile (an
operator's pin or rollback is never overruled). A champion the operator pinned (tags on its version)
stays, and the comparison is still made and recorded. `best_model_metadata.json` records both scores, the
interval, the holdout's version and per-class AP of both.
"""

from __future__ import annotations

import html
import json
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pipeline_steps._cli import StepParser, add_flag, step_parser
from pipeline_steps.contracts import HoldoutManifest, RegisteredModel
from pipeline_steps.evaluation.comparison import ClassMatches, class_ap50, match, paired_bootstrap, per_class_bootstrap
from pipeline_steps.evaluation.metrics import evaluate
from pipeline_steps.evaluation.scoring import (
    RUNTIME_KINDS,
    ModelNotScorable,
    ModelRuntime,
    score_models,
    scoring_sample,
)
from pipeline_steps.evaluation.sheets import class_vocabulary, load_sheets
from pipeline_steps.mltable_io import class_sort_key
from retrainer.champion.swap import compare_and_swap, read_champion
from retrainer.champion.tags import SCORE_TAG, Claim, moment, per_class_scores, pin_of, recorded_score
from retrainer.promotion import (
    ClassComparison,
    ClassGuard,
    Comparison,
    DifferenceInterval,
    PromotionDecision,
    PromotionRecord,
    decide_promotion,
)
from retrainer.records import ModelVersion
from retrainer.settings import SettingsError, load_registry_location
from retrainer.workspace import ModelRegistry, open_registry


@dataclass(frozen=True)
class HoldoutScores:
    """The challenger (and the champion, when there is one) scored on the same holdout images."""

    candidate_score: float
    candidate_per_class: dict[str, float]
    incumbent_score: float | None = None
    incumbent_per_class: dict[str, float] | None = None
    interval: DifferenceInterval | None = None
    seconds: float = 0.0
    scored_images: int | None = None
    sample_limit: int | None = None
    stopped_by_budget: bool = False
    class_guard: ClassGuard | None = None


HoldoutScorer = Callable[[ModelVersion, ModelVersion | None], HoldoutScores]


class ScoringUnavailable(Exception):
    """The models cannot be compared on the holdout here; the record says why, and the safe path decides.

    `side` says whose failure it was: the challenger's (the champion stays), the champion's (its recorded
    score decides, or the challenger replaces a champion whose model is gone), or the holdout's.
    """

    def __init__(self, reason: str, side: Literal["challenger", "champion", "holdout"] = "holdout", gone: bool = False):
        super().__init__(reason)
        self.side = side
        self.gone = gone


class TagError(ValueError):
    """The candidate cannot be compared (it is not registered)."""


def choose_best(
    registry: ModelRegistry,
    name: str,
    candidate_version: str,
    min_improvement: float,
    scorer: HoldoutScorer | None,
    holdout: HoldoutManifest | None = None,
    min_holdout_images: int = 1,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PromotionRecord:
    """Compare the challenger with the champion read now, and apply the decision only if that champion, and its
    pin, are still the registry's when scoring is over (a compare-and-swap): no lock is held while scoring."""
    expected, versions = read_champion(registry, name)
    by_version = {v.version: v for v in versions}
    if candidate_version not in by_version:
        raise TagError(f"{name}:{candidate_version} is not registered")
    candidate = by_version[candidate_version]
    champion = by_version.get(expected.version) if expected.version else None
    record = _decide(candidate, champion, min_improvement, scorer, holdout, min_holdout_images)
    if not record.promoted:
        record.best_version = read_champion(registry, name)[0].version
        return record
    claim = Claim("service", moment(clock()), f"service-{uuid.uuid4().hex[:12]}")
    swap = compare_and_swap(registry, name, expected, candidate.version, claim)
    record.best_version = swap.champion.version
    if swap.applied:
        record.champion_change, record.champion_since = claim.change, claim.since
        return record
    record.promoted = False
    record.chosen_version = swap.champion.version or candidate.version
    record.not_applied = swap.why_not
    record.reason = f"{record.reason}; not applied: {swap.why_not}, so the champion stays"
    return record


def _report_link(version: ModelVersion) -> str | None:
    """The evaluation report beside a locally stored model (AutoML models have their run page instead)."""
    report = Path(version.uri) / "report" / "report.html"
    return report.as_uri() if not version.uri.startswith("azureml:") and report.is_file() else None


def _decide(
    candidate: ModelVersion,
    incumbent: ModelVersion | None,
    min_improvement: float,
    scorer: HoldoutScorer | None,
    holdout: HoldoutManifest | None,
    min_holdout_images: int,
) -> PromotionRecord:
    previous = incumbent.version if incumbent else None
    if incumbent is not None and incumbent.version == candidate.version:
        score = recorded_score(candidate) or math.nan
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
    # A damaged recorded score reads as NaN (the challenger) or None (the champion): holdout scores replace
    # both, and where they cannot, the safe path decides and says so.
    candidate_score = recorded_score(candidate)
    candidate_score = math.nan if candidate_score is None else candidate_score
    incumbent_score = recorded_score(incumbent) if incumbent else None
    per_class = (per_class_scores(candidate), per_class_scores(incumbent))
    comparison = Comparison(holdout=holdout.holdout if holdout else None)
    interval, unavailable = None, None
    if scorer is None:
        comparison.not_rescored = "no holdout data was given (HOLDOUT_FRACTION=0): recorded validation scores"
    else:
        try:
            scores = scorer(candidate, incumbent)
            candidate_score, interval = scores.candidate_score, scores.interval
            incumbent_score = scores.incumbent_score if incumbent else None
            per_class = (scores.candidate_per_class, scores.incumbent_per_class or {})
            comparison.interval, comparison.scoring_seconds = interval, round(scores.seconds, 1)
            comparison.scored_images, comparison.sample_limit = scores.scored_images, scores.sample_limit
            comparison.stopped_by_budget = scores.stopped_by_budget
            comparison.class_guard = scores.class_guard
        except ScoringUnavailable as reason:
            comparison.not_rescored, unavailable = str(reason), reason
    decision = _safe_path(candidate_score, incumbent, incumbent_score, unavailable, comparison, min_holdout_images)
    decision = decision or decide_promotion(candidate_score, incumbent_score, min_improvement, interval)
    if comparison.class_guard is not None:
        decision = comparison.class_guard.verdict(decision)
    pin = pin_of(incumbent)
    if pin is not None:  # the operator pinned the champion: compared and recorded, never replaced
        kept = f"pinned: the champion stays ({pin.reason}); the comparison: {decision.reason}"
        decision = PromotionDecision(False, kept, decision.candidate_score, decision.incumbent_score)
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


def _safe_path(
    candidate_score: float,
    incumbent: ModelVersion | None,
    incumbent_score: float | None,
    unavailable: ScoringUnavailable | None,
    comparison: Comparison,
    min_holdout_images: int,
) -> PromotionDecision | None:
    """The decision where the evidence the score rule needs is missing or damaged; None where the rule applies."""
    if unavailable is not None and unavailable.side == "challenger":
        outcome = "the champion stays" if incumbent else "not promoted; no version is tagged best yet"
        return PromotionDecision(
            False, f"the challenger could not be scored ({unavailable}): {outcome}", candidate_score, incumbent_score
        )
    if incumbent is None:
        return None
    if not math.isfinite(candidate_score):  # whatever the champion's own state: non-finite never promotes
        reason = f"the challenger's score is not a finite number ({candidate_score}): the champion stays"
        return PromotionDecision(False, reason, candidate_score, incumbent_score)
    if unavailable is not None and unavailable.gone:
        reason = f"the champion's model is gone ({unavailable}): the challenger replaces it"
        return PromotionDecision(True, reason, candidate_score, incumbent_score)
    if comparison.interval is None and incumbent_score is None:
        reason = (
            f"the champion's recorded {SCORE_TAG} is missing or not a finite number "
            f"({incumbent.tags.get(SCORE_TAG)!r}) and it could not be rescored: the challenger's {candidate_score:.3f} "
            "replaces it"
        )
        return PromotionDecision(True, reason, candidate_score, None)
    scored = comparison.scored_images
    if comparison.interval is not None and scored is not None and scored < min_holdout_images:
        reason = (
            f"only {scored} holdout images were scored, fewer than the {min_holdout_images} a comparison needs "
            "(PROMOTION_MIN_HOLDOUT_IMAGES): too few to tell the models apart, the champion stays"
        )
        return PromotionDecision(False, reason, candidate_score, incumbent_score)
    return None


def holdout_scorer(
    registry: ModelRegistry,
    holdout_folder: Path,
    *,
    confidence: float,
    resamples: int,
    runtime: ModelRuntime,
    max_images: int | None = None,
    budget_minutes: float | None = None,
    images_folder: Path | None = None,
    images_prefix: str = "",
    min_class_instances: int = 20,
    max_class_ap_drop: float = 0.10,
    class_names: dict[str, str] | None = None,
) -> HoldoutScorer:
    """Score both models on a fixed sample of the holdout through the scoring contract; bootstrap the difference,
    overall and per class."""

    def score(candidate: ModelVersion, incumbent: ModelVersion | None) -> HoldoutScores:
        started = time.monotonic()  # the budget counts everything: reading the holdout, fetching the models
        deadline = None if budget_minutes is None else started + budget_minutes * 60
        sheets = load_sheets(holdout_folder, images_folder=images_folder, images_prefix=images_prefix)
        if not sheets:
            raise ScoringUnavailable(f"the holdout {holdout_folder} holds no images")
        sample = scoring_sample(sheets, max_images)
        models = [candidate] if incumbent is None else [candidate, incumbent]
        sides: list[Literal["challenger", "champion"]] = ["challenger", "champion"]
        with tempfile.TemporaryDirectory() as scratch:
            folders = [
                _fetch(registry, v, Path(scratch) / v.version, side)
                for v, side in zip(models, sides[: len(models)], strict=True)
            ]
            try:
                scored = score_models(folders, sample, runtime, deadline=deadline)
            except ModelNotScorable as error:  # e.g. a champion saved by an older detector architecture
                side = sides[folders.index(error.model)] if error.model in folders else "holdout"
                raise ScoringUnavailable(str(error), side) from error
        classes = class_vocabulary(scored.sheets)
        evaluations = [evaluate(scored.sheets, p, classes) for p in scored.predictions]
        per_class = [{c: round(v["ap50"], 4) for c, v in e.per_class.items()} for e in evaluations]
        maps = [e.metrics["mean_average_precision"] for e in evaluations]
        if incumbent is None:
            return HoldoutScores(
                maps[0],
                per_class[0],
                seconds=time.monotonic() - started,
                scored_images=len(scored.sheets),
                sample_limit=max_images,
                stopped_by_budget=scored.stopped_by_budget,
            )
        matches = [match(scored.sheets, p, classes) for p in scored.predictions]
        paired = paired_bootstrap(
            matches[1], matches[0], len(scored.sheets), resamples=resamples, confidence=confidence
        )
        guard = class_guard(
            matches[0],
            matches[1],
            len(scored.sheets),
            resamples=resamples,
            confidence=confidence,
            min_instances=min_class_instances,
            max_drop=max_class_ap_drop,
            names=class_names or {},
        )
        return HoldoutScores(
            maps[0],
            per_class[0],
            maps[1],
            per_class[1],
            DifferenceInterval(
                difference=paired.difference,
                low=paired.low,
                high=paired.high,
                confidence=paired.confidence,
                resamples=paired.resamples,
            ),
            seconds=time.monotonic() - started,
            scored_images=len(scored.sheets),
            sample_limit=max_images,
            stopped_by_budget=scored.stopped_by_budget,
            class_guard=guard,
        )

    return score


def class_guard(
    challenger: dict[str, ClassMatches],
    champion: dict[str, ClassMatches],
    images: int,
    *,
    resamples: int,
    confidence: float,
    min_instances: int,
    max_drop: float,
    names: dict[str, str],
) -> ClassGuard:
    """Each class's AP@0.5 for both models and the challenger's change, with an interval at the confidence
    adjusted for the number of guarded classes (see `ClassGuard`)."""
    instances = {c: int(m.ground_truth.sum()) for c, m in challenger.items()}
    guarded = sum(1 for count in instances.values() if count >= min_instances)
    adjusted = 1.0 - (1.0 - confidence) / max(guarded, 1)
    intervals = per_class_bootstrap(champion, challenger, images, resamples=resamples, confidence=adjusted)
    before, after = class_ap50(champion), class_ap50(challenger)
    return ClassGuard(
        min_instances=min_instances,
        max_drop=max_drop,
        confidence=adjusted,
        classes=[
            ClassComparison(
                class_id=c,
                name=names.get(c),
                instances=instances[c],
                champion_ap=round(before[c], 4),
                challenger_ap=round(after[c], 4),
                interval=DifferenceInterval(
                    difference=i.difference, low=i.low, high=i.high, confidence=i.confidence, resamples=i.resamples
                ),
            )
            for c, i in sorted(intervals.items(), key=lambda item: class_sort_key(item[0]))
        ],
    )


def _fetch(
    registry: ModelRegistry, version: ModelVersion, scratch: Path, side: Literal["challenger", "champion"]
) -> Path:
    """The version's MLflow model folder; ScoringUnavailable (gone) when the registry no longer has its files."""
    try:
        folder = registry.local_model_path(version, scratch)
    except Exception as error:  # the registry's boundary: a deleted version, lost files, a network fault
        raise ScoringUnavailable(
            f"{version.name}:{version.version} could not be fetched: {error!r}", side, True
        ) from None
    if not (folder / "MLmodel").is_file():
        raise ScoringUnavailable(f"{version.name}:{version.version} has no model files at {folder}", side, True)
    return folder


def append_comparison(report: Path, record: PromotionRecord) -> None:
    """Add the champion and the challenger, per class, with the decision, to the challenger's report."""
    classes = sorted(set(record.candidate_per_class) | set(record.previous_per_class), key=lambda c: (len(c), c))
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{record.previous_per_class.get(c, float('nan')):.3f}</td>"
        f"<td>{record.candidate_per_class.get(c, float('nan')):.3f}</td>"
        f"<td>{record.candidate_per_class.get(c, 0) - record.previous_per_class.get(c, 0):+.3f}</td></tr>"
        for c in classes
    )
    section = (
        f'<h2 id="champion-challenger">Champion (version {html.escape(str(record.previous_best_version))}) and '
        f"challenger (version {html.escape(record.candidate_version)})</h2>"
        f"<p><b>{'promoted' if record.promoted else 'the champion stays'}</b>: {html.escape(record.reason)}</p>"
        f"<p>{html.escape(record.comparison.describe())}</p>"
        f"<table><tr><th>class</th><th>champion AP@0.5</th><th>challenger AP@0.5</th>"
        f"<th>difference</th></tr>{rows}</table>"
    )
    if record.comparison.class_guard is not None:
        section += class_guard_chart(record.comparison.class_guard)
    text = report.read_text(encoding="utf-8")
    if 'id="champion-challenger"' not in text:
        report.write_text(text.replace("</body>", section + "</body>"), encoding="utf-8")


def class_names(label_map: Path | None) -> dict[str, str]:
    """Class id -> the last part of its name (`Instrument/Valve/Relief valve` -> `Relief valve`); {} without a map.

    Names are for the decision's words only: a map that cannot be read leaves the ids, it never stops a decision.
    """
    if label_map is None or not label_map.is_file():
        return {}
    try:
        mapping = json.loads(label_map.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(mapping, dict):
        return {}
    return {str(k): str(v).rsplit("/", 1)[-1] for k, v in mapping.items() if isinstance(v, str) and v}


def build_parser() -> StepParser:
    parser = step_parser("tag_model", __doc__)
    add_flag(parser, "model-base-name")
    add_flag(parser, "model-metadata-path", required=True, type=Path, help="register_model output folder")
    add_flag(parser, "best-model-metadata-path", required=True, type=Path, help="output folder")
    add_flag(parser, "holdout-data-path", type=Path, default=None, help="the split's holdout MLTable folder")
    add_flag(parser, "holdout-images-path", type=Path, default=None, help="where the holdout's images are mounted")
    add_flag(parser, "images-string-absolute-path", default="", help="image URL prefix to map onto the mount")
    # Each number carries a setting and takes its range from the setting's field: what the service accepts at
    # start, the step accepts (exit 2 naming the flag otherwise, as argparse does).
    add_flag(
        parser,
        "min-map-improvement",
        setting="MIN_MAP_IMPROVEMENT",
        help="how much the new model's mAP@0.5 must beat the best model's to be promoted",
    )
    add_flag(parser, "confidence-level", setting="PROMOTION_CONFIDENCE_LEVEL", help="of the bootstrap interval")
    add_flag(parser, "bootstrap-resamples", setting="PROMOTION_BOOTSTRAP_RESAMPLES")
    add_flag(
        parser,
        "max-holdout-images",
        setting="PROMOTION_MAX_HOLDOUT_IMAGES",
        help="a fixed seeded sample of at most this many",
    )
    add_flag(
        parser,
        "scoring-budget-minutes",
        setting="PROMOTION_SCORING_MINUTES",
        help="from the step's start, scoring both models stops after",
    )
    add_flag(
        parser,
        "min-holdout-images",
        setting="PROMOTION_MIN_HOLDOUT_IMAGES",
        help="fewer scored images: the champion stays",
    )
    add_flag(
        parser,
        "min-class-instances",
        setting="MIN_CLASS_INSTANCES",
        help="symbols of a class on the holdout for it to be guarded",
    )
    add_flag(
        parser,
        "max-class-ap-drop",
        setting="MAX_CLASS_AP_DROP",
        help="AP@0.5 a guarded class may lose before the champion stays",
    )
    add_flag(parser, "label-map-path", type=Path, default=None, help="class id -> name JSON, for the decision's words")
    # Run by hand the model runs here; the component (Azure ML) scores in AutoML's interpreter in its image.
    add_flag(parser, "scoring-env-manager", choices=RUNTIME_KINDS, default="local")
    add_flag(parser, "automl-python", help="AutoML's interpreter, with --scoring-env-manager automl")
    return parser


def class_guard_chart(guard: ClassGuard) -> str:
    """Each class's AP@0.5 change as a bar with its interval, and the guard's line at -max_drop (inline SVG)."""
    rows, width, left, row_height = guard.classes, 640, 190, 22
    height = 30 + row_height * len(rows)

    def x(value: float) -> float:  # -1 .. +1 across the plot
        return left + (value + 1.0) / 2.0 * (width - left - 20)

    bars = []
    for index, c in enumerate(rows):
        y = 20 + index * row_height
        fallen = c in guard.regressions()
        colour = "#c0392b" if fallen else ("#7f8c8d" if c.instances < guard.min_instances else "#2e86c1")
        start, end = sorted((x(0.0), x(c.interval.difference)))
        bars.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12">{html.escape(c.label())} '
            f"({c.instances})</text>"
            f'<rect x="{start:.1f}" y="{y + 4}" width="{max(end - start, 1):.1f}" height="12" fill="{colour}"/>'
            f'<line x1="{x(c.interval.low):.1f}" x2="{x(c.interval.high):.1f}" y1="{y + 10}" y2="{y + 10}" '
            'stroke="#222" stroke-width="1.5"/>'
        )
    guard_x = x(-guard.max_drop)
    return (
        f"<h3>Per class: challenger minus champion AP@0.5</h3><p>Bars: the change; lines: its "
        f"{guard.confidence:.1%} interval (adjusted for the classes watched); red: a watched class that fell by more "
        f"than {guard.max_drop:g} beyond doubt; grey: fewer than {guard.min_instances} symbols on the holdout, not "
        f'watched; the dashed line: the guard at -{guard.max_drop:g}.</p><svg xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" role="img" aria-label="per-class AP change">'
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="10" y2="{height - 5}" stroke="#999"/>'
        f'<line x1="{guard_x:.1f}" x2="{guard_x:.1f}" y1="10" y2="{height - 5}" stroke="#c0392b" '
        f'stroke-dasharray="4 3" class="guard-line"/>{"".join(bars)}</svg>'
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        registered = RegisteredModel.read(args.model_metadata_path)
        registry = open_registry(load_registry_location())
        holdout = HoldoutManifest.read(args.holdout_data_path) if args.holdout_data_path else None
        scorer = (
            holdout_scorer(
                registry,
                args.holdout_data_path,
                confidence=args.confidence_level,
                resamples=args.bootstrap_resamples,
                runtime=ModelRuntime(
                    args.scoring_env_manager, args.automl_python if args.scoring_env_manager == "automl" else None
                ),
                max_images=args.max_holdout_images,
                budget_minutes=args.scoring_budget_minutes,
                min_class_instances=args.min_class_instances,
                max_class_ap_drop=args.max_class_ap_drop,
                class_names=class_names(args.label_map_path),
                images_folder=args.holdout_images_path,
                images_prefix=args.images_string_absolute_path,
            )
            if holdout is not None and holdout.holdout.images > 0
            else None
        )
        record = choose_best(
            registry,
            args.model_base_name,
            registered.version,
            args.min_map_improvement,
            scorer,
            holdout,
            args.min_holdout_images,
        )
    except (TagError, SettingsError, FileNotFoundError, ValueError) as error:
        print(f"tag model failed: {error}", file=sys.stderr)
        return 1
    args.best_model_metadata_path.mkdir(parents=True, exist_ok=True)
    record.write(args.best_model_metadata_path)
    if record.candidate_report and record.previous_best_version:
        append_comparison(Path(unquote(urlsplit(record.candidate_report).path)), record)
    print(f"best model: {record.name} version {record.best_version} ({record.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
