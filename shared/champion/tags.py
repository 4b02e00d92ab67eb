"""The champion as the model registry holds it: every tag that says which version is best, why, and since when.

The registry is the champion's one authority: the tag step (on Azure ML, where it reads the registry alone) and
the operator's controls change it only through `shared.champion.swap`, and everything else (the best-model
record, the history, serving) follows what these tags say. Tag names are defined here and nowhere else (the two
`ModelVersion` reads itself, the best tag and the validation count, in `shared.records`, and exported here).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from shared.records import BEST_MODEL_TAG, VALIDATION_IMAGES_TAG, ModelVersion

__all__ = [
    "BEST_MODEL_TAG",
    "CHAMPION_BY_TAG",
    "CHAMPION_CHANGE_TAG",
    "CHAMPION_SINCE_TAG",
    "CLASS_IDS_TAG",
    "PER_CLASS_TAG",
    "REGISTERED_AT_TAG",
    "SCORE_TAG",
    "TRAIN_DATA_TAG",
    "VALIDATION_IMAGES_TAG",
    "VAL_DATA_TAG",
    "ChampionState",
    "Claim",
    "DecidedBy",
    "Pin",
    "class_ids",
    "per_class_scores",
    "pin_of",
    "recorded_score",
    "rightful_champion",
]

#: The version's recorded validation mAP@0.5 (register_model writes it; AutoML's primary metric's name).
SCORE_TAG = "mean_average_precision"
#: Per-class validation AP@0.5 of the version, as a JSON object (register_model writes it).
PER_CLASS_TAG = "per_class_ap50"
#: The class ids the version was trained on, as a JSON list (register_model copies the data asset's).
CLASS_IDS_TAG = "class_ids"
#: The data assets (`name:version`) the version was trained and validated on (register_model writes them).
TRAIN_DATA_TAG = "train_data"
VAL_DATA_TAG = "val_data"
#: When register_model registered the version (UTC, ISO 8601 to the second).
REGISTERED_AT_TAG = "registered_at"
#: How the version became the champion: who decided, when, and the id of that change (written with the best tag).
CHAMPION_BY_TAG = "champion_decided_by"
CHAMPION_SINCE_TAG = "champion_since"
CHAMPION_CHANGE_TAG = "champion_change"
#: The pin: why, who and when. A version is pinned while its reason is not empty (unpinning empties them).
PINNED_REASON_TAG = "pinned_reason"
PINNED_BY_TAG = "pinned_by"
PINNED_AT_TAG = "pinned_at"

DecidedBy = Literal["service", "operator"]


def moment(at: datetime) -> str:
    """A registry timestamp: UTC, to the microsecond, so that two of them compare as text and as time alike."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Pin:
    """An operator's pin on the champion: runs still train and compare, and the champion stays."""

    reason: str
    by: str
    at: str

    def tags(self) -> dict[str, str]:
        return {PINNED_REASON_TAG: self.reason, PINNED_BY_TAG: self.by, PINNED_AT_TAG: self.at}


#: What unpinning writes (the registry's tags can be overwritten, not always removed).
UNPINNED = {PINNED_REASON_TAG: "", PINNED_BY_TAG: "", PINNED_AT_TAG: ""}


def pin_of(version: ModelVersion | None) -> Pin | None:
    """The pin a version carries, or None."""
    if version is None or not version.tags.get(PINNED_REASON_TAG, "").strip():
        return None
    tags = version.tags
    return Pin(tags[PINNED_REASON_TAG], tags.get(PINNED_BY_TAG, ""), tags.get(PINNED_AT_TAG, ""))


@dataclass(frozen=True)
class Claim:
    """How a version came to be the champion: who decided, when, and the id of the change."""

    decided_by: DecidedBy
    since: str
    change: str

    def tags(self) -> dict[str, str]:
        return {
            BEST_MODEL_TAG: "true",
            CHAMPION_BY_TAG: self.decided_by,
            CHAMPION_SINCE_TAG: self.since,
            CHAMPION_CHANGE_TAG: self.change,
        }


def claim_of(version: ModelVersion) -> Claim:
    """The claim a version's tags make; a version tagged best before claims were recorded reads as the service's."""
    decided_by: DecidedBy = "operator" if version.tags.get(CHAMPION_BY_TAG) == "operator" else "service"
    return Claim(decided_by, version.tags.get(CHAMPION_SINCE_TAG, ""), version.tags.get(CHAMPION_CHANGE_TAG, ""))


@dataclass(frozen=True)
class ChampionState:
    """Which version is the champion, how it became so, and its pin: what a decision is compared against.

    Two reads of the registry give equal states exactly when nobody changed the champion or its pin between them.
    """

    version: str | None
    change: str = ""
    pin: Pin | None = None
    decided_by: DecidedBy = "service"
    since: str = ""

    @classmethod
    def of(cls, champion: ModelVersion | None) -> ChampionState:
        if champion is None:
            return cls(None)
        claim = claim_of(champion)
        return cls(champion.version, claim.change, pin_of(champion), claim.decided_by, claim.since)

    def what_changed_since(self, before: ChampionState) -> str:
        """In words, what happened between the `before` state and this one (for a decision that stands down)."""
        if self.version == before.version and self.change == before.change:
            if self.pin is not None and (before.pin is None or before.pin != self.pin):
                return f"version {self.version} was pinned by {self.pin.by or 'an operator'} ({self.pin.reason})"
            return f"version {self.version} was unpinned"
        if self.version is None:
            return "the best tag was taken off every version"
        if self.decided_by == "operator":
            return f"an operator made version {self.version} the champion"
        return f"another run's tag step made version {self.version} the champion"


def rightful_champion(versions: list[ModelVersion]) -> ModelVersion | None:
    """The one version that should carry the best tag when writers without a common lock left several claims.

    An operator's choice outranks a run's, and among the same kind the later one wins: a pin counts as the
    operator's choice of its version at the pin's time. Versions tagged before claims were recorded tie, and the
    higher recorded score wins among them, then the older version (two racing old tag steps agree on it).
    """
    claims: list[tuple[tuple[bool, str, float, int], ModelVersion]] = []
    for version in versions:
        score = recorded_score(version)
        tie_break = (-math.inf if score is None else score, -int(version.version))
        pin = pin_of(version)
        if version.is_best:
            claim = claim_of(version)
            claims.append(((claim.decided_by == "operator", claim.since, *tie_break), version))
        if pin is not None:
            claims.append(((True, pin.at, *tie_break), version))
    return max(claims, key=lambda c: c[0])[1] if claims else None


def recorded_score(version: ModelVersion | None) -> float | None:
    """The version's recorded validation mAP, or None when the tag is missing or not a finite number."""
    if version is None:
        return None
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


def per_class_scores(version: ModelVersion | None) -> dict[str, float]:
    """The version's recorded per-class AP@0.5 (finite values only); empty when it records none."""
    if version is None or not version.tags.get(PER_CLASS_TAG):
        return {}
    try:
        values = json.loads(version.tags[PER_CLASS_TAG])
    except json.JSONDecodeError:
        return {}
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
