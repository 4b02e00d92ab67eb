"""The promotion rule and its typed records, shared by the tag step (writer) and the service (reader).

The tag step decides with `decide_promotion` and writes a `PromotionRecord` as
`best_model_metadata.json`; the service reads it from the finished run and keeps the promoted model
as a `BestModel` in the datastore. The CLI, the demo and the reports read the same two types.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

#: What the tag step writes into its output folder.
PROMOTION_RECORD_FILE = "best_model_metadata.json"


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    candidate_score: float
    incumbent_score: float | None


def decide_promotion(
    candidate_score: float, incumbent_score: float | None, min_improvement: float
) -> PromotionDecision:
    """The newcomer wins only when it beats the best by more than `min_improvement`.

    A tie keeps the incumbent (the reference pipeline let ties win): a promotion moves a deployment
    and the reports, which an equal score does not justify.
    """
    if incumbent_score is None:
        return PromotionDecision(True, "no model was tagged best yet", candidate_score, None)
    margin = candidate_score - incumbent_score
    if margin > min_improvement:
        reason = f"mAP {candidate_score:.4f} beats the best {incumbent_score:.4f} by {margin:.4f} > {min_improvement:g}"
        return PromotionDecision(True, reason, candidate_score, incumbent_score)
    reason = (
        f"mAP {candidate_score:.4f} does not beat the best {incumbent_score:.4f} "
        f"by more than {min_improvement:g} (difference {margin:+.4f}): the best model stays"
    )
    return PromotionDecision(False, reason, candidate_score, incumbent_score)


class Comparison(BaseModel):
    """Whether the two scores are comparable, and what was done when they were not."""

    model_config = ConfigDict(extra="ignore")

    same_validation_data: bool = True
    rescored: bool = False
    note: str = ""
    rescored_on: str | None = None
    rescore_skipped: str | None = None


class PromotionRecord(BaseModel):
    """The tag step's verdict on one newly registered version."""

    model_config = ConfigDict(extra="ignore")

    name: str
    candidate_version: str
    previous_best_version: str | None = None
    chosen_version: str
    promoted: bool
    candidate_score: float
    previous_best_score: float | None = None
    min_map_improvement: float = 0.0
    reason: str
    comparison: Comparison = Field(default_factory=Comparison)
    repaired_best_tags_on_versions: list[str] = Field(default_factory=list)
    #: The version tagged best after the step (None only if a racing step left none).
    best_version: str | None = None
    #: Per-class AP@0.5 of the candidate and of the previous best, when their training recorded it.
    candidate_per_class: dict[str, float] = Field(default_factory=dict)
    previous_per_class: dict[str, float] = Field(default_factory=dict)
    #: Where the candidate's evaluation report is, when it has one (a file:// URL locally).
    candidate_report: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> PromotionRecord:
        return cls.model_validate_json(text)


class BestModel(BaseModel):
    """The promoted model as the service records it (`BEST_MODEL_BLOB`) and announces it (ModelPromoted)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    version: str
    score: float | None
    run: str
    time: str
