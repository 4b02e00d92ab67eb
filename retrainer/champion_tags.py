"""The champion's tags in the registry: which version is best (one only), what it scored, which classes it
knows, and the operator's pin.

Shared by the tag step (pipeline_steps/tag_model.py), which runs on Azure ML and reads only the registry,
and by the operator's controls (retrainer/champion.py). The pin lives as tags on the champion's version,
so the tag step sees it where it decides: while the champion carries one, no challenger replaces it,
whatever the comparison says (the comparison is still made and recorded).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Protocol

from retrainer.promotion import PromotionDecision
from retrainer.records import BEST_MODEL_TAG, ModelVersion

#: The version's recorded validation mAP@0.5 (register_model writes it).
SCORE_TAG = "mean_average_precision"
#: The class ids the version was trained on, as a JSON list (pipeline_steps/contracts.py writes it).
CLASS_IDS_TAG = "class_ids"
#: The pin: why, who and when. A version is pinned while its reason is not empty (unpinning empties them).
PINNED_REASON_TAG = "pinned_reason"
PINNED_BY_TAG = "pinned_by"
PINNED_AT_TAG = "pinned_at"


class TaggedModels(Protocol):
    """The part of the model registry (`retrainer.workspace.ModelRegistry`) the best tag needs."""

    def model_versions(self, name: str) -> list[ModelVersion]: ...

    def set_model_tags(self, name: str, version: str, tags: dict[str, str]) -> None: ...


@dataclass(frozen=True)
class Pin:
    """An operator's pin on the champion: runs still train and compare, and the champion stays."""

    reason: str
    by: str
    at: str

    def tags(self) -> dict[str, str]:
        return {PINNED_REASON_TAG: self.reason, PINNED_BY_TAG: self.by, PINNED_AT_TAG: self.at}

    def verdict(self, decision: PromotionDecision) -> PromotionDecision:
        """The champion stays, and the reason keeps what the comparison said."""
        reason = f"pinned: the champion stays ({self.reason}); the comparison: {decision.reason}"
        return PromotionDecision(False, reason, decision.candidate_score, decision.incumbent_score)


#: What unpinning writes (the registry's tags can be overwritten, not always removed).
UNPINNED = {PINNED_REASON_TAG: "", PINNED_BY_TAG: "", PINNED_AT_TAG: ""}


def pin_of(version: ModelVersion | None) -> Pin | None:
    """The pin a version carries, or None."""
    if version is None or not version.tags.get(PINNED_REASON_TAG, "").strip():
        return None
    tags = version.tags
    return Pin(tags[PINNED_REASON_TAG], tags.get(PINNED_BY_TAG, ""), tags.get(PINNED_AT_TAG, ""))


def recorded_score(version: ModelVersion) -> float | None:
    """The version's recorded validation mAP, or None when the tag is missing or not a finite number."""
    try:
        score = float(version.tags[SCORE_TAG])
    except (KeyError, ValueError):
        return None
    return score if math.isfinite(score) else None


def class_ids(version: ModelVersion) -> frozenset[str] | None:
    """The class ids the version was trained on; None when it records none (or the tag cannot be read)."""
    try:
        found = json.loads(version.tags[CLASS_IDS_TAG])
    except (KeyError, ValueError):
        return None
    return frozenset(str(c) for c in found) if isinstance(found, list) else None


def repair_best_tags(registry: TaggedModels, versions: list[ModelVersion], keep: str | None = None) -> list[str]:
    """Leave the best tag on one version only: `keep` when it is tagged, else the highest score, then the oldest.

    Returns the versions untagged. The tag step keeps the best score (two racing steps agree on it); an
    operator's promotion keeps the version the operator chose.
    """
    tagged = [v for v in versions if v.is_best]
    if len(tagged) <= 1:
        return []
    chosen = next((v for v in tagged if v.version == keep), None)
    chosen = chosen or max(tagged, key=lambda v: (recorded_score(v) or -math.inf, -int(v.version)))
    removed = [v.version for v in tagged if v.version != chosen.version]
    for version in removed:
        registry.set_model_tags(chosen.name, version, {BEST_MODEL_TAG: "false"})
    return removed
