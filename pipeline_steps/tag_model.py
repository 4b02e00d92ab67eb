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
(`shared/champion/swap.py`): only if the champion and its pin are still the ones it was compared
against once scoring is over; otherwise the champion stays and the record says what changed meanwhile (an
operator's pin or rollback is never overruled). A champion the operator pinned (tags on its version)
stays, and the comparison is still made and recorded. `best_model_metadata.json` records both scores, the
interval, the holdout's version and per-class AP of both.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pipeline_steps._cli import StepParser, add_flag, step_parser
from pipeline_steps.comparison_report import append_comparison
from pipeline_steps.evaluation.scoring import RUNTIME_KINDS, ModelRuntime
from pipeline_steps.holdout_scorer import HoldoutScorer, ScoringUnavailable, holdout_scorer
from shared.champion.swap import compare_and_swap, read_champion
from shared.champion.tags import SCORE_TAG, Claim, moment, per_class_scores, pin_of, recorded_score
from shared.contracts import HoldoutManifest, RegisteredModel
from shared.evaluation.sheets import image_path
from shared.promotion import Comparison, PromotionDecision, PromotionRecord, decide_promotion
from shared.records import ModelVersion
from shared.registry import ModelRegistry, open_registry
from shared.settings import SettingsError, load_registry_location


class TagError(ValueError):
    """The challenger cannot be compared (it is not registered)."""


def choose_best(
    registry: ModelRegistry,
    name: str,
    challenger_version: str,
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
    if challenger_version not in by_version:
        raise TagError(f"{name}:{challenger_version} is not registered")
    challenger = by_version[challenger_version]
    champion = by_version.get(expected.version) if expected.version else None
    record = _decide(challenger, champion, min_improvement, scorer, holdout, min_holdout_images)
    if not record.promoted:
        record.best_version = read_champion(registry, name)[0].version
        return record
    claim = Claim("service", moment(clock()), f"service-{uuid.uuid4().hex[:12]}")
    swap = compare_and_swap(registry, name, expected, challenger.version, claim)
    record.best_version = swap.champion.version
    if swap.applied:
        record.champion_change, record.champion_since = claim.change, claim.since
        return record
    record.promoted = False
    record.chosen_version = swap.champion.version or challenger.version
    record.not_applied = swap.why_not
    record.reason = f"{record.reason}; not applied: {swap.why_not}, so the champion stays"
    return record


def _report_link(version: ModelVersion) -> str | None:
    """The evaluation report beside a locally stored model (AutoML models have their run page instead)."""
    report = Path(version.uri) / "report" / "report.html"
    return report.as_uri() if not version.uri.startswith("azureml:") and report.is_file() else None


def _decide(
    challenger: ModelVersion,
    champion: ModelVersion | None,
    min_improvement: float,
    scorer: HoldoutScorer | None,
    holdout: HoldoutManifest | None,
    min_holdout_images: int,
) -> PromotionRecord:
    previous = champion.version if champion else None
    # A damaged recorded score reads as NaN (the challenger) or None (the champion): holdout scores replace
    # both, and where they cannot, the safe path decides and says so.
    challenger_score = recorded_score(challenger)
    challenger_score = math.nan if challenger_score is None else challenger_score
    if champion is not None and champion.version == challenger.version:
        return PromotionRecord(
            name=challenger.name,
            challenger_version=challenger.version,
            champion_version=previous,
            chosen_version=challenger.version,
            promoted=False,
            challenger_score=challenger_score,
            champion_score=challenger_score,
            min_map_improvement=min_improvement,
            reason="already the best model; nothing to change",
        )
    champion_score = recorded_score(champion) if champion else None
    per_class = (per_class_scores(challenger), per_class_scores(champion))
    comparison = Comparison(holdout=holdout.holdout if holdout else None)
    interval, unavailable = None, None
    if scorer is None:
        comparison.not_rescored = "no holdout data was given (HOLDOUT_FRACTION=0): recorded validation scores"
    else:
        try:
            scores = scorer(challenger, champion)
            challenger_score, interval = scores.challenger_score, scores.interval
            champion_score = scores.champion_score if champion else None
            per_class = (scores.challenger_per_class, scores.champion_per_class or {})
            comparison.interval, comparison.scoring_seconds = interval, round(scores.seconds, 1)
            comparison.scored_images, comparison.sample_limit = scores.scored_images, scores.sample_limit
            comparison.stopped_by_budget = scores.stopped_by_budget
            comparison.class_guard = scores.class_guard
        except ScoringUnavailable as reason:
            comparison.not_rescored, unavailable = str(reason), reason
    decision = _safe_path(challenger_score, champion, champion_score, unavailable, comparison, min_holdout_images)
    decision = decision or decide_promotion(challenger_score, champion_score, min_improvement, interval)
    if comparison.class_guard is not None:
        decision = comparison.class_guard.verdict(decision)
    pin = pin_of(champion)
    if pin is not None:  # the operator pinned the champion: compared and recorded, never replaced
        kept = f"pinned: the champion stays ({pin.reason}); the comparison: {decision.reason}"
        decision = PromotionDecision(False, kept, decision.challenger_score, decision.champion_score)
    chosen = challenger if decision.promote or champion is None else champion
    return PromotionRecord(
        challenger_per_class=per_class[0],
        champion_per_class=per_class[1],
        challenger_report=_report_link(challenger),
        name=challenger.name,
        challenger_version=challenger.version,
        champion_version=previous,
        chosen_version=chosen.version,
        promoted=decision.promote,
        challenger_score=decision.challenger_score,
        champion_score=decision.champion_score,
        min_map_improvement=min_improvement,
        reason=decision.reason,
        comparison=comparison,
    )


def _safe_path(
    challenger_score: float,
    champion: ModelVersion | None,
    champion_score: float | None,
    unavailable: ScoringUnavailable | None,
    comparison: Comparison,
    min_holdout_images: int,
) -> PromotionDecision | None:
    """The decision where the evidence the score rule needs is missing or damaged; None where the rule applies."""
    if unavailable is not None and unavailable.side == "challenger":
        outcome = "the champion stays" if champion else "not promoted; no version is tagged best yet"
        return PromotionDecision(
            False, f"the challenger could not be scored ({unavailable}): {outcome}", challenger_score, champion_score
        )
    if champion is None:
        return None
    if not math.isfinite(challenger_score):  # whatever the champion's own state: non-finite never promotes
        reason = f"the challenger's score is not a finite number ({challenger_score}): the champion stays"
        return PromotionDecision(False, reason, challenger_score, champion_score)
    if unavailable is not None and unavailable.gone:
        reason = f"the champion's model is gone ({unavailable}): the challenger replaces it"
        return PromotionDecision(True, reason, challenger_score, champion_score)
    if comparison.interval is None and champion_score is None:
        reason = (
            f"the champion's recorded {SCORE_TAG} is missing or not a finite number "
            f"({champion.tags.get(SCORE_TAG)!r}) and it could not be rescored: the challenger's {challenger_score:.3f} "
            "replaces it"
        )
        return PromotionDecision(True, reason, challenger_score, None)
    scored = comparison.scored_images
    if comparison.interval is not None and scored is not None and scored < min_holdout_images:
        reason = (
            f"only {scored} holdout images were scored, fewer than the {min_holdout_images} a comparison needs "
            "(PROMOTION_MIN_HOLDOUT_IMAGES): too few to tell the models apart, the champion stays"
        )
        return PromotionDecision(False, reason, challenger_score, champion_score)
    return None


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
    if record.challenger_report and record.champion_version:
        append_comparison(image_path(record.challenger_report), record)
    print(f"best model: {record.name} version {record.best_version} ({record.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
