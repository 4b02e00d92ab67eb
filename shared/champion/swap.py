"""The only code that moves the champion in the registry: a compare-and-swap, and the repair of a race.

A decision (a run's tag step, an operator's promotion) is applied only while the champion and its pin are still
the ones it was made against: the writer re-reads the registry just before writing, and again after. Local
registries hold a lock across the two reads and the write. Azure ML has none, so a writer re-reads after writing
and `settle` leaves the best tag on the rightful claim (`rightful_champion`): an operator's choice is never undone
by a run, whichever wrote last.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from shared.champion.tags import (
    BEST_MODEL_TAG,
    UNPINNED,
    ChampionState,
    Claim,
    Pin,
    pin_of,
    rightful_champion,
)
from shared.records import ModelVersion


class ChampionRegistry(Protocol):
    """The part of the model registry (`shared.registry.ModelRegistry`) the champion's tags need."""

    def model_versions(self, name: str) -> list[ModelVersion]: ...

    def set_model_tags(self, name: str, version: str, tags: dict[str, str]) -> None: ...

    def promotion_lock(self, name: str) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class SwapOutcome:
    """Whether the decision was applied, the champion afterwards, and, when it was not, what had changed."""

    applied: bool
    champion: ChampionState
    why_not: str = ""


def read_champion(registry: ChampionRegistry, name: str) -> tuple[ChampionState, list[ModelVersion]]:
    """The champion now (a race a lock-less registry left is settled first), with every version."""
    versions = registry.model_versions(name)
    if settle(registry, name, versions):
        versions = registry.model_versions(name)
    return ChampionState.of(next((v for v in versions if v.is_best), None)), versions


def settle(registry: ChampionRegistry, name: str, versions: list[ModelVersion]) -> list[str]:
    """Leave the best tag, and a pin, on the rightful champion alone; returns the versions whose tags changed."""
    rightful = rightful_champion(versions)
    if rightful is None:
        return []
    changed = []
    for version in versions:
        if version.version == rightful.version:
            continue
        stray = {**({BEST_MODEL_TAG: "false"} if version.is_best else {}), **(UNPINNED if pin_of(version) else {})}
        if stray:
            registry.set_model_tags(name, version.version, stray)
            changed.append(version.version)
    if not rightful.is_best:  # a pinned version whose best tag a racing writer took: the operator's choice stands
        registry.set_model_tags(name, rightful.version, {BEST_MODEL_TAG: "true"})
        changed.append(rightful.version)
    return changed


def move_best(
    registry: ChampionRegistry,
    name: str,
    champion: str | None,
    target: str,
    claim: Claim,
    pin: Pin | None = None,
) -> None:
    """Untag the champion first (for a moment none is best, never two), then tag the target with its claim.

    An operator's move carries the pin with the best tag (`pin`, or none). A run's move writes no pin tags at all:
    a pin an operator placed a moment before stays where it was placed, and `settle` hands that version the best
    tag back.
    """
    by_operator = claim.decided_by == "operator"
    if champion is not None and champion != target:
        registry.set_model_tags(name, champion, {BEST_MODEL_TAG: "false", **(UNPINNED if by_operator else {})})
    pin_tags = (pin.tags() if pin else UNPINNED) if by_operator else {}
    registry.set_model_tags(name, target, {**claim.tags(), **pin_tags})


def compare_and_swap(
    registry: ChampionRegistry, name: str, expected: ChampionState, target: str, claim: Claim
) -> SwapOutcome:
    """Make `target` the champion under `claim`, only if the champion is still `expected` (version, change and pin).

    Not applied when it moved: `why_not` says what happened meanwhile. Also not applied when a writer without
    the lock (Azure ML) raced and its claim outranks this one.
    """
    with registry.promotion_lock(name):
        current, _ = read_champion(registry, name)
        if current != expected:
            return SwapOutcome(False, current, f"{current.what_changed_since(expected)} while this run scored")
        move_best(registry, name, current.version, target, claim)
        after, _ = read_champion(registry, name)
    if after.version != target or after.change != claim.change:
        return SwapOutcome(False, after, f"{after.what_changed_since(expected)} at the same moment")
    return SwapOutcome(True, after)
