"""The operator's controls over the champion: promote or roll back by hand, pin, unpin, and the history.

Each operation moves tags in the model registry (the best tag, the pin: `retrainer/champion_tags.py`),
then writes what people and subscribers read: ModelPromoted first (as the service does, so a failure
repeats the announcement instead of losing it), the best-model record, and an entry of the champion's
history in the ledger. The `retrain` command and the HTTP API call these and only translate.

Never two versions tagged best: a promotion takes the registry's promotion lock (local; tag steps take
the same one), and afterwards re-reads and repairs to exactly the version the operator chose (Azure ML
has no lock). Where a racing tag step wins, the operation says so instead of claiming a promotion.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError

from retrainer.best_model import current_best_model, write_best_model
from retrainer.champion_tags import (
    UNPINNED,
    Pin,
    class_ids,
    pin_of,
    recorded_score,
    repair_best_tags,
)
from retrainer.datastore import Datastore
from retrainer.ledger import MAX_REASON_CHARS, ChampionChange, ChangeKind, Ledger, now_utc
from retrainer.promotion import BestModel, PromotionRecord
from retrainer.records import BEST_MODEL_TAG, ModelVersion
from retrainer.settings import Settings
from retrainer.workspace import ModelRegistry

log = logging.getLogger(__name__)

#: How many history entries a rollback looks through for the promotion it undoes.
_LOOKBACK = 200
#: Re-read-and-repair rounds after a promotion on a registry without a lock.
_SETTLE_ATTEMPTS = 3


class ChampionError(RuntimeError):
    """An operator's request refused; the message is the one line to show."""


class BadRequest(ChampionError):
    """The request itself is malformed (an empty reason)."""


class VersionNotFound(ChampionError):
    """No such version is registered."""


class PromotionRefused(ChampionError):
    """The version exists but must not become the champion (no model files, another class map)."""


class ChampionConflict(ChampionError):
    """The registry or the record moved under the request (a racing tag step, a promotion not recorded yet)."""


@dataclass(frozen=True)
class Outcome:
    """What an operation did: the best-model record now, the history entry (None when nothing changed), in words."""

    record: BestModel | None
    change: ChampionChange | None
    message: str

    def as_dict(self) -> dict:
        return {
            "best_model": self.record.model_dump() if self.record else None,
            "change": self.change.as_dict() if self.change else None,
            "message": self.message,
        }


class ChampionControls:
    """Promote (or roll back), pin and unpin the champion of MODEL_BASE_NAME; read its history."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        ledger: Ledger,
        datastore: Datastore,
        accepted_classes: Callable[[], frozenset[str] | None],
        publish: Callable[[BestModel], None] | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self._name = settings.MODEL_BASE_NAME
        self._blob = settings.BEST_MODEL_BLOB
        self._registry = registry
        self._ledger = ledger
        self._datastore = datastore
        self._accepted_classes = accepted_classes
        self._publish = publish
        self._clock = clock

    # --- promote and roll back ---------------------------------------------------------------------

    def promote(self, version: str, reason: str, actor: str, force: bool = False) -> Outcome:
        """Make `version` the champion by hand: a rollback when it was best before (the entry names the
        promotion it undoes). The pin, if any, stays on the champion: it moves with the best tag.

        Refused, with one line, for a version that does not exist (VersionNotFound), has no model files or was
        trained on a class map the service no longer uses (PromotionRefused; `force` lets the class map pass).
        """
        reason = _reason(reason)
        target = self._version(version)
        self._check_files(target)
        evidence = [self._check_classes(target, force)]
        with self._registry.promotion_lock(self._name):
            versions = self._current_versions()
            target = next((v for v in versions if v.version == version), target)
            champion = next((v for v in versions if v.is_best), None)
            moved = champion is None or champion.version != version
            pin = self._move_best(champion, target) if moved else pin_of(target)
        # An unreadable record is rewritten below, like a stale one.
        record = current_best_model(self._datastore, self._blob)
        if not moved and record is not None and record.version == version and record.name == self._name:
            return Outcome(record, None, f"version {version} is already the best model; nothing changed")
        before = champion.version if champion is not None and moved else (record.version if record else None)
        return self._announce(target, before, reason, actor, evidence, pin)

    def _move_best(self, champion: ModelVersion | None, target: ModelVersion) -> Pin | None:
        """Untag the champion first (for a moment none is best, never two), then tag the target; the pin moves
        with the best tag. Returns the pin the new champion carries."""
        pin = pin_of(champion)
        if champion is not None:
            self._registry.set_model_tags(self._name, champion.version, {BEST_MODEL_TAG: "false", **UNPINNED})
        pin_tags = pin.tags() if pin else UNPINNED
        self._registry.set_model_tags(self._name, target.version, {BEST_MODEL_TAG: "true", **pin_tags})
        self._settle(target.version)
        return pin

    def _settle(self, version: str) -> None:
        """Re-read and repair until `version` alone is best: a tag step that raced on a lock-less registry may
        have tagged another (repaired) or untagged ours (tagged again while none is best)."""
        for _ in range(_SETTLE_ATTEMPTS):
            repair_best_tags(self._registry, self._registry.model_versions(self._name), keep=version)
            best = [v.version for v in self._registry.model_versions(self._name) if v.is_best]
            if best == [version]:
                return
            if best:
                raise ChampionConflict(
                    f"a run's tag step moved the best tag at the same moment: version {best[0]} is best now; "
                    f"promote {version} again if it should be"
                )
            self._registry.set_model_tags(self._name, version, {BEST_MODEL_TAG: "true"})
        raise ChampionConflict(f"the best tag kept moving while version {version} was promoted; try again")

    def _announce(
        self,
        target: ModelVersion,
        before: str | None,
        reason: str,
        actor: str,
        evidence: list[str],
        pin: Pin | None,
    ) -> Outcome:
        """ModelPromoted first, then the record, then the history entry (each repeatable)."""
        history = self._ledger.champion_history(_LOOKBACK)
        undone = next(
            (c for c in history if c.from_version == target.version and c.kind in _MOVES and c.model == self._name),
            None,
        )
        score, run_id = self._score_and_run(target, history)
        now = self._clock()
        record = BestModel(
            name=self._name,
            version=target.version,
            score=score,
            run=run_id,
            time=now.isoformat(),
            decided_by="operator",
            reason=reason,
            replaced_version=before,
            **_pin_fields(pin),
        )
        if self._publish is not None:
            self._publish(record)
        write_best_model(self._datastore, self._blob, record)
        if undone is not None:
            evidence.insert(0, f"undoes {undone.id} ({undone.words()} at {undone.at:%Y-%m-%d %H:%M} UTC)")
        change = self._ledger.record_champion_change(
            ChampionChange(
                at=now,
                kind=ChangeKind.ROLLED_BACK if undone is not None else ChangeKind.PROMOTED,
                model=self._name,
                from_version=before,
                to_version=target.version,
                decided_by="operator",
                actor=actor,
                reason=reason,
                evidence="; ".join(e for e in evidence if e),
                score=score,
                run_id=run_id,
                undoes=undone.id if undone is not None else "",
            )
        )
        verb = "rolled back to" if undone is not None else "promoted"
        log.info("operator %s %s version %s: %s", verb, self._name, target.version, reason)
        return Outcome(record, change, f"{verb} {self._name} version {target.version} (from {before or 'none'})")

    def _score_and_run(self, target: ModelVersion, history: list[ChampionChange]) -> tuple[float | None, str]:
        """The score the record gave the version when it was promoted before, else its run's holdout score, else
        its recorded validation score; and the service's run that registered it, when known."""
        earlier = next(
            (c for c in history if c.to_version == target.version and c.kind in _MOVES and c.model == self._name), None
        )
        if earlier is not None and earlier.run_id:
            return earlier.score, earlier.run_id
        for run in self._ledger.runs(limit=100):
            if run.decision is not None and run.decision.candidate_version == target.version:
                return run.decision.candidate_score, run.run_id
        return recorded_score(target), ""

    def _version(self, version: str) -> ModelVersion:
        versions = self._registry.model_versions(self._name)
        found = next((v for v in versions if v.version == version), None)
        if found is None:
            known = f"versions {versions[0].version} to {versions[-1].version}" if versions else "no versions"
            raise VersionNotFound(f"{self._name} has no version {version!r} (the registry holds {known})")
        return found

    def _check_files(self, version: ModelVersion) -> None:
        """PromotionRefused when the registry no longer has the version's model files (a champion must load)."""
        with tempfile.TemporaryDirectory() as scratch:
            try:
                folder = self._registry.local_model_path(version, Path(scratch))
            except (FileNotFoundError, ResourceNotFoundError) as error:
                raise PromotionRefused(f"version {version.version} has no model files ({error})") from None
            if not (folder / "MLmodel").is_file():
                raise PromotionRefused(f"version {version.version} has no model files (no MLmodel at {folder})")

    def _check_classes(self, version: ModelVersion, force: bool) -> str:
        """What the version's classes say, as evidence; PromotionRefused when they are not the label map's
        (unless forced)."""
        accepted = self._accepted_classes()
        if accepted is None:
            return "the service has no label map: classes not checked"
        trained = class_ids(version)
        if trained == accepted:
            return "trained on the label map's classes"
        if trained is None:
            problem = "records no class ids (its class_ids tag), so its classes cannot be checked against the label map"
        else:
            problem = (
                f"was trained on a class map the service no longer uses (classes added since: "
                f"{_few(accepted - trained)}; gone since: {_few(trained - accepted)})"
            )
        if not force:
            raise PromotionRefused(f"version {version.version} {problem}: --force to promote it anyway")
        return f"forced: {problem}"

    # --- pin ---------------------------------------------------------------------------------------

    def pin(self, reason: str, actor: str) -> Outcome:
        """Pin the champion: runs still train, score and record their comparison, and the champion stays.

        ChampionConflict when there is no champion, or when the best-model record does not name the registry's
        champion yet (a run's promotion is being recorded: the record would lose the pin).
        """
        reason = _reason(reason)
        with self._registry.promotion_lock(self._name):
            champion = next((v for v in self._current_versions() if v.is_best), None)
            if champion is None:
                raise ChampionConflict(f"no version of {self._name} is tagged best: there is nothing to pin")
            record = self._record_naming(champion)
            pin = Pin(reason, actor, self._clock().isoformat(timespec="seconds"))
            self._registry.set_model_tags(self._name, champion.version, pin.tags())
            still_best = any(
                v.version == champion.version and v.is_best for v in self._registry.model_versions(self._name)
            )
            if not still_best:  # a tag step on a lock-less registry moved the best tag meanwhile
                self._registry.set_model_tags(self._name, champion.version, UNPINNED)
                raise ChampionConflict(
                    f"a run's tag step replaced version {champion.version} while it was pinned: nothing is pinned; "
                    "look at `retrain models` and pin again"
                )
        pinned = record.model_copy(update=_pin_fields(pin))
        write_best_model(self._datastore, self._blob, pinned)
        change = self._record_change(ChangeKind.PINNED, champion, reason, actor)
        return Outcome(pinned, change, f"pinned {self._name} version {champion.version}: the champion stays")

    def unpin(self, actor: str, reason: str = "") -> Outcome:
        """Take the pin off (every version that carries one): the next run's comparison decides again."""
        record = current_best_model(self._datastore, self._blob)
        with self._registry.promotion_lock(self._name):
            pinned = [v for v in self._registry.model_versions(self._name) if pin_of(v) is not None]
            for version in pinned:
                self._registry.set_model_tags(self._name, version.version, UNPINNED)
        if record is not None and record.pinned_reason is not None:
            record = record.model_copy(update=_pin_fields(None))
            write_best_model(self._datastore, self._blob, record)
        if not pinned:
            return Outcome(record, None, f"{self._name} was not pinned; nothing changed")
        champion = next((v for v in pinned if v.is_best), pinned[0])
        was = pin_of(champion)
        why = reason.strip()[:MAX_REASON_CHARS] or f"was pinned: {was.reason if was else ''}"
        change = self._record_change(ChangeKind.UNPINNED, champion, why, actor)
        return Outcome(record, change, f"unpinned {self._name} version {champion.version}: runs decide again")

    def _record_naming(self, champion: ModelVersion) -> BestModel:
        """The best-model record, when it names the registry's champion; ChampionConflict otherwise."""
        record = current_best_model(self._datastore, self._blob)
        if record is not None and record.name == self._name and record.version == champion.version:
            return record
        named = f"names version {record.version}" if record else "is missing or unreadable"
        raise ChampionConflict(
            f"the best-model record {named} but the registry's champion is version {champion.version}: a run's "
            f"promotion is being recorded; try again in a few minutes (if it stays so, `retrain promote "
            f"{champion.version} --reason ...` records it)"
        )

    def _record_change(self, kind: ChangeKind, version: ModelVersion, reason: str, actor: str) -> ChampionChange:
        return self._ledger.record_champion_change(
            ChampionChange(
                at=self._clock(),
                kind=kind,
                model=self._name,
                from_version=version.version,
                to_version=version.version,
                decided_by="operator",
                actor=actor,
                reason=reason,
                evidence=f"recorded mAP@0.5 {recorded_score(version)}",
            )
        )

    # --- reading ---------------------------------------------------------------------------------------

    def history(self, limit: int = 10) -> list[ChampionChange]:
        """The latest entries of the champion's history, newest first."""
        return self._ledger.champion_history(limit)

    def _current_versions(self) -> list[ModelVersion]:
        """The versions, with the best tag on one at most (a race a lock-less registry left is repaired first)."""
        versions = self._registry.model_versions(self._name)
        if repair_best_tags(self._registry, versions):
            versions = self._registry.model_versions(self._name)
        return versions


_MOVES = (ChangeKind.PROMOTED, ChangeKind.ROLLED_BACK)


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise BadRequest("a reason is required: it is recorded with the change")
    if len(reason) > MAX_REASON_CHARS:
        raise BadRequest(f"the reason is longer than {MAX_REASON_CHARS} characters")
    return reason


def _few(classes: frozenset[str], shown: int = 5) -> str:
    ordered = sorted(classes, key=lambda c: (len(c), c))
    if not ordered:
        return "none"
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(ordered[:shown]) + more


def _pin_fields(pin: Pin | None) -> dict[str, str | None]:
    return {
        "pinned_reason": pin.reason if pin else None,
        "pinned_by": pin.by if pin else None,
        "pinned_at": pin.at if pin else None,
    }


# --- what the service records of a run's promotion ---------------------------------------------------------


def overridden_by_operator(current: BestModel | None, decision: PromotionRecord) -> bool:
    """Whether the operator chose the champion after this run's tag step decided, so the record stays.

    The record names the operator's choice and the version it replaced. The tag step decided first when the
    operator replaced the version this run promoted (a run promotes a version never seen before, so the
    operator saw this run's outcome), or when the tag step saw another champion than the operator's.
    """
    if current is None or current.decided_by != "operator" or current.name != decision.name:
        return False
    if decision.best_version == current.version:
        return False
    return decision.best_version == current.replaced_version or decision.previous_best_version != current.version


def automatic_change(decision: PromotionRecord, run_id: str, at: datetime, note: str = "") -> ChampionChange | None:
    """The history entry for a run whose tag step promoted its challenger (None when the champion stayed).

    Its id is derived from the run, so recording it again (a retried promotion) leaves one entry.
    """
    if not (decision.promoted and decision.best_version == decision.chosen_version == decision.candidate_version):
        return None
    evidence = "; ".join(e for e in (decision.comparison.describe(), note) if e)
    return ChampionChange(
        at=at,
        kind=ChangeKind.PROMOTED,
        model=decision.name,
        from_version=decision.previous_best_version,
        to_version=decision.best_version,
        decided_by="service",
        actor="service",
        reason=decision.reason,
        evidence=evidence,
        score=decision.candidate_score,
        run_id=run_id,
        id=f"{at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{hashlib.sha256(run_id.encode()).hexdigest()[:6]}",
    )
