"""The promotion rule and its typed records, shared by the tag step (writer) and the service (reader).

The tag step decides with `decide_promotion` and writes a `PromotionRecord` as
`best_model_metadata.json`; the service reads it from the finished run, and the champion's authority
(`retrainer.champion`) records what it changed. The CLI, the demo and the reports read the same record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from shared.step_file import StepFile

#: What the tag step writes into its output folder.
PROMOTION_RECORD_FILE = "best_model_metadata.json"


class HoldoutInfo(BaseModel):
    """Which holdout images a comparison used: the split assignment's version and a digest of their names."""

    model_config = ConfigDict(extra="ignore")

    assignment_version: int
    images: int
    digest: str

    def label(self) -> str:
        return f"assignment v{self.assignment_version}, {self.images} images, {self.digest}"


#: Records stay readable whatever a float holds: inf and NaN are written as "Infinity" and "NaN" (and read
#: back as such), never as null, which a float field would refuse.
_RECORD = ConfigDict(extra="ignore", ser_json_inf_nan="strings")


class DifferenceInterval(BaseModel):
    """Challenger's mAP@0.5 minus the champion's on the same holdout, with a paired bootstrap interval."""

    model_config = _RECORD

    difference: float
    low: float
    high: float
    confidence: float
    resamples: int

    def words(self) -> str:
        """ "+0.040 (95% interval -0.010 to +0.090)"."""
        return f"{self.difference:+.3f} ({self.confidence:.0%} interval {self.low:+.3f} to {self.high:+.3f})"


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    challenger_score: float
    champion_score: float | None


def decide_promotion(
    challenger_score: float,
    champion_score: float | None,
    min_improvement: float,
    interval: DifferenceInterval | None = None,
) -> PromotionDecision:
    """The newcomer wins only when it beats the best by more than `min_improvement`, beyond reasonable doubt.

    With an interval (both models scored on the same holdout), its lower bound must clear the margin:
    a difference that a different sample of images could erase is not a reason to replace a model in
    use. Without one (no holdout), the point scores decide and the reason says so. A tie keeps the
    champion: a promotion moves a deployment and the reports, which an equal score does not justify.
    """
    if not math.isfinite(challenger_score):
        outcome = "the champion stays" if champion_score is not None else "not promoted"
        reason = f"the challenger's score is not a finite number ({challenger_score}): {outcome}"
        return PromotionDecision(False, reason, challenger_score, champion_score)
    if champion_score is None:
        return PromotionDecision(True, "no model was tagged best yet", challenger_score, None)
    if interval is not None:
        if interval.low > min_improvement:
            reason = f"{interval.words()}: the challenger is better by more than {min_improvement:g}, promoted"
            return PromotionDecision(True, reason, challenger_score, champion_score)
        verdict = (
            "the challenger is worse"
            if interval.high < 0
            else "not enough evidence"
            if interval.high > min_improvement
            else f"not better by more than {min_improvement:g}"
        )
        reason = f"{interval.words()}: {verdict}, the champion stays"
        return PromotionDecision(False, reason, challenger_score, champion_score)
    margin = challenger_score - champion_score
    note = "recorded scores, no holdout to compare on"
    if margin > min_improvement:
        reason = f"{margin:+.3f} on {note}: beats the best by more than {min_improvement:g}, promoted"
        return PromotionDecision(True, reason, challenger_score, champion_score)
    reason = f"{margin:+.3f} on {note}: not better by more than {min_improvement:g}, the champion stays"
    return PromotionDecision(False, reason, challenger_score, champion_score)


class ClassComparison(BaseModel):
    """One class on the scored holdout images: both models' AP@0.5 and the challenger's change, with an interval."""

    model_config = _RECORD

    class_id: str
    name: str | None = None
    instances: int
    champion_ap: float
    challenger_ap: float
    #: Challenger minus champion for this class, at the guard's Bonferroni-adjusted confidence.
    interval: DifferenceInterval

    def label(self) -> str:
        return self.name or f"class {self.class_id}"


class ClassGuard(BaseModel):
    """The per-class guard: no promotion that loses a class, however much the average gains.

    A class is guarded when the scored holdout holds at least `min_instances` of its symbols. It blocks a
    promotion when its AP fell by more than `max_drop` and its own interval lies wholly below zero. With
    many classes one would look worse by chance alone, so each interval is drawn at the confidence
    level adjusted for the number of guarded classes (Bonferroni): the chance that any of them blocks a
    challenger that lost nothing stays within the decision's own level.
    """

    model_config = _RECORD

    min_instances: int
    max_drop: float
    confidence: float
    classes: list[ClassComparison] = Field(default_factory=list)
    #: Classes a copy leaves out to fit where it is kept (the ledger's row, for a label map of thousands of
    #: classes): never one that fell. The tag step's own record holds them all.
    classes_left_out: int = 0

    def regressions(self) -> list[ClassComparison]:
        """Guarded classes that fell by more than `max_drop`, beyond doubt; the worst first."""
        fallen = [
            c
            for c in self.classes
            if c.instances >= self.min_instances
            and c.champion_ap - c.challenger_ap > self.max_drop
            and c.interval.high < 0
        ]
        return sorted(fallen, key=lambda c: c.challenger_ap - c.champion_ap)

    def verdict(self, decision: PromotionDecision) -> PromotionDecision:
        """The decision, unless it promotes a challenger that lost a guarded class: then the champion stays."""
        fallen = self.regressions()
        if not decision.promote or not fallen:
            return decision
        worst = fallen[0]
        more = f" (and {len(fallen) - 1} more)" if len(fallen) > 1 else ""
        overall = decision.reason.split(":", 1)[0]
        reason = (
            f"the challenger is better overall, {overall}, but {worst.label()} AP fell {worst.champion_ap:.2f} -> "
            f"{worst.challenger_ap:.2f}{more}: the champion stays"
        )
        return PromotionDecision(False, reason, decision.challenger_score, decision.champion_score)


class Comparison(BaseModel):
    """How the two models were compared: on which holdout, by which scorer, with what interval."""

    model_config = _RECORD

    holdout: HoldoutInfo | None = None
    interval: DifferenceInterval | None = None
    #: Why the models were not scored on a holdout (then the recorded scores decided).
    not_rescored: str | None = None
    #: What the comparison cost (scoring both models and the bootstrap).
    scoring_seconds: float | None = None
    #: Holdout images both models scored: a fixed seeded sample of at most `sample_limit`, cut short
    #: when scoring ran out of its time budget.
    scored_images: int | None = None
    sample_limit: int | None = None
    stopped_by_budget: bool = False
    #: Per class, when both models were scored: what the guard saw.
    class_guard: ClassGuard | None = None

    def describe(self) -> str:
        """How the scores were obtained, for the report and the CLI."""
        if self.not_rescored:
            return f"compared on recorded scores: {self.not_rescored}"
        if self.holdout is None:
            return "no comparison was needed"
        where = f"both scored on the holdout ({self.holdout.label()}), which neither model trained on"
        if self.scored_images is not None and self.scored_images < self.holdout.images:
            cause = "the scoring time budget ran out" if self.stopped_by_budget else f"at most {self.sample_limit}"
            where += f"; on {self.scored_images} of its {self.holdout.images} images, a fixed sample ({cause})"
        if self.interval is not None:
            where += f"; paired bootstrap over the scored images, {self.interval.resamples} resamples"
        return where


def _was(old: str, new: str) -> AliasChoices:
    """A field read under its name, or under the name records written before it was renamed use."""
    return AliasChoices(new, old)


class PromotionRecord(StepFile):
    """The tag step's verdict on one newly registered version (its output folder's `best_model_metadata.json`).

    Its words are the champion's and the challenger's; records stored before they were (candidate, previous
    best) still read, and are written back in these words.
    """

    model_config = ConfigDict(**_RECORD, populate_by_name=True)
    FILE_NAME: ClassVar[str] = PROMOTION_RECORD_FILE

    name: str
    challenger_version: str = Field(validation_alias=_was("candidate_version", "challenger_version"))
    champion_version: str | None = Field(
        default=None, validation_alias=_was("previous_best_version", "champion_version")
    )
    chosen_version: str
    promoted: bool
    challenger_score: float = Field(validation_alias=_was("candidate_score", "challenger_score"))
    champion_score: float | None = Field(default=None, validation_alias=_was("previous_best_score", "champion_score"))
    min_map_improvement: float = 0.0
    reason: str
    comparison: Comparison = Field(default_factory=Comparison)
    #: The version tagged best after the step (None before any version was promoted).
    best_version: str | None = None
    #: When the step made the challenger the champion: the registry's id of that change, and its time.
    champion_change: str = ""
    champion_since: str = ""
    #: Why a promotion the comparison called for was not applied (the champion or its pin moved meanwhile).
    not_applied: str | None = None
    #: Per-class AP@0.5 of the challenger and of the champion, when their training recorded it.
    challenger_per_class: dict[str, float] = Field(
        default_factory=dict, validation_alias=_was("candidate_per_class", "challenger_per_class")
    )
    champion_per_class: dict[str, float] = Field(
        default_factory=dict, validation_alias=_was("previous_per_class", "champion_per_class")
    )
    #: Where the challenger's evaluation report is, when it has one (a file:// URL locally).
    challenger_report: str | None = Field(default=None, validation_alias=_was("candidate_report", "challenger_report"))

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> PromotionRecord:
        return cls.model_validate_json(text)
