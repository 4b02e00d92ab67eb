"""A run's decision (the tag step's record) in its row: JSON cut over a few properties, shortened to fit."""

from __future__ import annotations

import json

from retrainer.ledger.rows import MAX_ERROR_CHARS, MAX_EVIDENCE_CHARS, PROPERTY_CHARS, ascii_json, bounded
from shared.promotion import PromotionRecord

#: A run's decision, as JSON over at most this many properties (512 KiB): a record of a few hundred classes fits
#: whole; a longer one keeps every class that fell and as many others as fit.
DECISION_PROPERTIES = 8


def decision_properties(decision: PromotionRecord | None) -> dict[str, str]:
    """`decision`, `decision_1`, ...: the decision's JSON cut into pieces a property holds."""
    text = _decision_text(decision) if decision else ""
    pieces = [text[start : start + PROPERTY_CHARS] for start in range(0, len(text), PROPERTY_CHARS)] or [""]
    return {("decision" if index == 0 else f"decision_{index}"): piece for index, piece in enumerate(pieces)}


def stored_decision(entity: dict) -> str:
    """The decision's JSON from its pieces (a row written before decisions were cut holds one)."""
    pieces = [entity.get("decision") or ""]
    while f"decision_{len(pieces)}" in entity:
        pieces.append(entity[f"decision_{len(pieces)}"])
    return "".join(pieces)


def _decision_text(decision: PromotionRecord) -> str:
    """The decision as ASCII JSON within `DECISION_PROPERTIES` properties.

    Whole when it fits (inf and NaN as the strings the record writes). A longer one (a label map of thousands of
    classes) keeps every guarded class that fell, then the classes that changed most, as many as fit, and says in
    `classes_left_out` how many it left out; the run's own record in the workspace holds them all.
    """
    limit = DECISION_PROPERTIES * PROPERTY_CHARS
    text = ascii_json(json.loads(decision.model_dump_json()))
    guard = decision.comparison.class_guard
    if len(text) <= limit or guard is None:
        return text if len(text) <= limit else _minimal_decision_text(decision)
    fallen = guard.regressions()
    ranked = fallen + sorted(
        (c for c in guard.classes if c not in fallen), key=lambda c: abs(c.challenger_ap - c.champion_ap), reverse=True
    )
    keep = len(ranked)
    while keep > 0:
        keep //= 2
        kept = ranked[:keep]
        ids = {c.class_id for c in kept}
        shortened = decision.model_copy(
            update={
                "comparison": decision.comparison.model_copy(
                    update={
                        "class_guard": guard.model_copy(
                            update={"classes": kept, "classes_left_out": guard.classes_left_out + len(ranked) - keep}
                        )
                    }
                ),
                "challenger_per_class": {c: v for c, v in decision.challenger_per_class.items() if c in ids},
                "champion_per_class": {c: v for c, v in decision.champion_per_class.items() if c in ids},
            }
        )
        text = ascii_json(json.loads(shortened.model_dump_json()))
        if len(text) <= limit:
            return text
    return _minimal_decision_text(decision)


def _minimal_decision_text(decision: PromotionRecord) -> str:
    """The verdict alone (who, which versions, the scores, the reason bounded): what the service acts on."""
    minimal = PromotionRecord(
        name=bounded(decision.name, 200),
        challenger_version=bounded(decision.challenger_version, 200),
        champion_version=decision.champion_version and bounded(decision.champion_version, 200),
        chosen_version=bounded(decision.chosen_version, 200),
        best_version=decision.best_version and bounded(decision.best_version, 200),
        promoted=decision.promoted,
        challenger_score=decision.challenger_score,
        champion_score=decision.champion_score,
        min_map_improvement=decision.min_map_improvement,
        reason=bounded(decision.reason, MAX_ERROR_CHARS),
        challenger_report=decision.challenger_report and bounded(decision.challenger_report, MAX_EVIDENCE_CHARS),
    )
    return ascii_json(json.loads(minimal.model_dump_json()))  # every field bounded: a few pieces at most
