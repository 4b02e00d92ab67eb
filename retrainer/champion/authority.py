"""The champion's one authority on the service's side: every change of the champion, and what follows from it.

A change moves the registry's tags (`shared.champion.swap`), then, in the same critical section, announces
ModelPromoted when the version changed, writes the best-model record and appends the history: in that order, each
repeatable, so a failure repeats an announcement rather than losing one. The critical section is a lease on the
record's lock blob (the service's writers on every machine) and the registry's promotion lock (local tag steps).

Doors: the operator's (`promote`, `pin`, `unpin`: the `retrain` command and the HTTP API) and the service's
(`record_run`: a completed run). Whatever a run's tag step did, the record follows the registry, never the run's
claim, so a stale decision cannot overrule an operator.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError

from retrainer.champion.record import BestModel, current_best_model, write_best_model
from retrainer.datastore import BlobStore
from retrainer.ledger import Ledger
from retrainer.ledger.champion import ChampionChange, ChangeKind
from retrainer.ledger.rows import MAX_REASON_CHARS, now_utc
from retrainer.settings import Settings
from shared.champion.swap import move_best, read_champion
from shared.champion.tags import (
    UNPINNED,
    ChampionState,
    Claim,
    DecidedBy,
    Pin,
    class_ids,
    moment,
    pin_of,
    recorded_score,
)
from shared.promotion import PromotionRecord
from shared.records import ModelVersion
from shared.registry import ModelRegistry

log = logging.getLogger(__name__)

#: How many history entries a rollback looks through for the promotion it undoes.
_LOOKBACK = 200
#: Writes of an operator's change re-read and re-applied on a registry without a lock, at most.
_APPLY_ATTEMPTS = 3


class ChampionError(RuntimeError):
    """An operator's request refused; the message is the one line to show."""


class BadRequest(ChampionError):
    """The request itself is malformed (an empty, overlong or unencodable reason)."""


class VersionNotFound(ChampionError):
    """No such version is registered."""


class PromotionRefused(ChampionError):
    """The version exists but must not become the champion (no model files, another class map)."""


class ChampionConflict(ChampionError):
    """The request cannot apply to the champion as it is (nothing to pin, a registry that kept moving)."""


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


def checked_reason(reason: str, required: bool = True) -> str:
    """The reason as recorded: stripped, not empty (when required), at most MAX_REASON_CHARS, valid text."""
    reason = reason.strip()
    if required and not reason:
        raise BadRequest("a reason is required: it is recorded with the change")
    if len(reason) > MAX_REASON_CHARS:
        raise BadRequest(f"the reason is longer than {MAX_REASON_CHARS} characters ({len(reason)})")
    try:
        reason.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: bytes of another encoding decoded as UTF-8 by the terminal
        raise BadRequest(
            "the reason holds bytes that are not UTF-8 text (was it typed in another encoding?): write it again"
        ) from None
    return reason


class ChampionAuthority:
    """Promote (or roll back), pin and unpin the champion of MODEL_BASE_NAME, record runs' changes, read its story."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        ledger: Ledger,
        datastore: BlobStore,
        accepted_classes: Callable[[], frozenset[str] | None] = lambda: None,
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

    # --- reading -------------------------------------------------------------------------------------

    def champion(self) -> ModelVersion | None:
        """The version the registry names the champion (a race a lock-less registry left is settled first)."""
        state, versions = read_champion(self._registry, self._name)
        return _find(versions, state.version)

    def record(self) -> BestModel | None:
        """The best-model record, or None when there is none or it cannot be read."""
        return current_best_model(self._datastore, self._blob)

    def history(self, limit: int = 10) -> list[ChampionChange]:
        """The latest entries of the champion's history, newest first."""
        return self._ledger.champion.latest(limit)

    @contextmanager
    def _section(self) -> Iterator[None]:
        """One writer of the champion at a time: the record's lease, then the registry's lock."""
        with self._datastore.exclusive(f"{self._blob}.lock"), self._registry.promotion_lock(self._name):
            yield

    # --- the operator's doors --------------------------------------------------------------------------

    def promote(self, version: str, reason: str, actor: str, force: bool = False) -> Outcome:
        """Make `version` the champion by hand: a rollback when it was best before (the entry names the promotion it
        undoes). The pin, if any, moves with the best tag.

        Refused, with one line, for a version that does not exist (VersionNotFound), has no model files or was
        trained on a class map the service no longer uses (PromotionRefused; `force` lets the class map pass).
        """
        reason = checked_reason(reason)
        target = self._version(version)
        self._check_files(target)  # outside the section: on Azure ML it downloads the model
        evidence = [self._check_classes(target, force)]
        with self._section():
            state, versions = read_champion(self._registry, self._name)
            record = self.record()
            if state.version == version:
                if record is not None and _names(record, state):
                    return Outcome(record, None, f"version {version} is already the champion; nothing changed")
                why = "the record did not name the registry's champion"
                return self._follow_registry(state, _find(versions, state.version), record, why)
            claim = Claim("operator", moment(self._clock()), _change_id("operator"))
            after = self._apply(state, version, claim, state.pin)
            history = self._ledger.champion.latest(_LOOKBACK)
            undone = next((c for c in history if c.from_version == version and c.kind in _MOVES), None)
            if undone is not None:
                evidence.insert(0, f"undoes {undone.id} ({undone.words()} at {undone.at:%Y-%m-%d %H:%M} UTC)")
            score, run_id = self._score_and_run(target, history)
            new_record = self._record_of(after, score, run_id, reason, state.version)
            change = ChampionChange(
                at=self._clock(),
                kind=ChangeKind.ROLLED_BACK if undone is not None else ChangeKind.PROMOTED,
                model=self._name,
                from_version=state.version,
                to_version=version,
                decided_by="operator",
                actor=actor,
                reason=reason,
                evidence="; ".join(e for e in evidence if e),
                score=score,
                run_id=run_id,
                undoes=undone.id if undone is not None else "",
            )
            entry = self._commit(new_record, record, change)
        verb = "rolled back to" if undone is not None else "promoted"
        log.info("operator %s %s version %s: %s", verb, self._name, version, reason)
        return Outcome(new_record, entry, f"{verb} {self._name} version {version} (from {state.version or 'none'})")

    def pin(self, reason: str, actor: str) -> Outcome:
        """Pin the champion: runs still train, score and record their comparison, and the champion stays."""
        reason = checked_reason(reason)
        with self._section():
            state, _ = read_champion(self._registry, self._name)
            if state.version is None:
                raise ChampionConflict(f"no version of {self._name} is tagged best: there is nothing to pin")
            pin = Pin(reason, actor, moment(self._clock()))
            after, versions = self._apply_pin(state, pin)
            record = self.record()
            new_record = self._continued(record, after, _find(versions, after.version))
            change = self._pin_change(ChangeKind.PINNED, state.version, _find(versions, state.version), reason, actor)
            entry = self._commit(new_record, record, change)
        return Outcome(new_record, entry, f"pinned {self._name} version {state.version}: the champion stays")

    def unpin(self, actor: str, reason: str = "") -> Outcome:
        """Take the pin off (every version that carries one): the next run's comparison decides again."""
        reason = checked_reason(reason, required=False)
        with self._section():
            state, versions = read_champion(self._registry, self._name)
            pinned = [v for v in versions if pin_of(v) is not None]
            for version in pinned:
                self._registry.set_model_tags(self._name, version.version, UNPINNED)
            after, after_versions = read_champion(self._registry, self._name)
            record = self.record()
            if not pinned:
                return Outcome(record, None, f"{self._name} was not pinned; nothing changed")
            new_record = self._continued(record, after, _find(after_versions, after.version))
            was = state.pin or pin_of(pinned[0])
            why = reason or f"was pinned: {was.reason if was else ''}"
            unpinned = state.version or pinned[0].version
            change = self._pin_change(ChangeKind.UNPINNED, unpinned, _find(after_versions, unpinned), why, actor)
            entry = self._commit(new_record, record, change)
        return Outcome(new_record, entry, f"unpinned {self._name} version {state.version}: runs decide again")

    # --- the service's door ----------------------------------------------------------------------------

    def record_run(self, decision: PromotionRecord, run_id: str) -> BestModel | None:
        """What a completed run's tag step did, recorded: its promotion in the history (once, however often this is
        retried, even when an operator overruled it since), and the record brought to the registry's champion."""
        with self._section():
            state, versions = read_champion(self._registry, self._name)
            record = self.record()
            applied = bool(decision.champion_change) and decision.name == self._name
            entry = _automatic_change(decision, run_id, self._clock) if applied else None
            if entry is not None and state.change != decision.champion_change:
                entry = _overruled(entry, state)
            if state.version is None:
                if entry is not None:
                    self._ledger.champion.record(entry)
                return record
            if state.change == decision.champion_change and applied:
                # The run's own change: the registry's claim is the service's, as the record says.
                new_record = self._record_of(
                    state, decision.challenger_score, run_id, decision.reason, decision.champion_version
                )
                if record == new_record:
                    return record
                self._commit(new_record, record, entry)
                return new_record
            if entry is not None:
                self._ledger.champion.record(entry)
            if record is not None and _names(record, state):
                return record
            champion = _find(versions, state.version)
            return self._follow_registry(state, champion, record, f"run {run_id} completed").record

    # --- one change, written in one place --------------------------------------------------------------

    def _apply(self, state: ChampionState, target: str, claim: Claim, pin: Pin | None) -> ChampionState:
        """Write an operator's change, re-read, and write again where a writer without the lock undid it."""
        for _ in range(_APPLY_ATTEMPTS):
            move_best(self._registry, self._name, state.version, target, claim, pin)
            after, _ = read_champion(self._registry, self._name)
            if after.version == target and after.change == claim.change and after.pin == pin:
                return after
            state = after
        raise ChampionConflict(f"the best tag kept moving while version {target} was changed; try again")

    def _apply_pin(self, state: ChampionState, pin: Pin) -> tuple[ChampionState, list[ModelVersion]]:
        """Pin the champion, re-read, and pin again where a writer without the lock undid it (a pin outranks a run's
        claim, so `read_champion` hands the pinned version the best tag back); the state and the versions read."""
        for _ in range(_APPLY_ATTEMPTS):
            self._registry.set_model_tags(self._name, state.version or "", pin.tags())
            after, versions = read_champion(self._registry, self._name)
            if after.pin == pin:
                return after, versions
        raise ChampionConflict(f"the pin on version {state.version} kept being overwritten; try again")

    def _commit(
        self, record: BestModel, previous: BestModel | None, change: ChampionChange | None
    ) -> ChampionChange | None:
        """ModelPromoted when the version changed, then the record, then the history entry (each repeatable)."""
        if self._publish is not None and (previous is None or previous.version != record.version):
            self._publish(record)
        write_best_model(self._datastore, self._blob, record)
        return self._ledger.champion.record(change) if change is not None else None

    def _follow_registry(
        self, state: ChampionState, champion: ModelVersion | None, record: BestModel | None, why: str
    ) -> Outcome:
        """Rewrite the record from the registry's champion (`champion`, the version `state` names), where it had
        fallen behind (a crash between the tags and the record, a race a lock-less registry settled)."""
        score, run_id = (
            self._score_and_run(champion, self._ledger.champion.latest(_LOOKBACK)) if champion else (None, "")
        )
        stale = record.version if record else None
        new_record = self._record_of(state, score, run_id, f"recorded from the registry ({why})", stale)
        if record is not None and record.version == state.version:
            new_record = new_record.model_copy(
                update={"reason": record.reason, "replaced_version": record.replaced_version}
            )
        self._commit(new_record, record, None)
        log.warning("the best-model record named %s; it follows the registry's champion %s now", stale, state.version)
        return Outcome(new_record, None, f"version {state.version} is the champion; the record follows it now")

    def _record_of(
        self, state: ChampionState, score: float | None, run_id: str, reason: str, replaced: str | None
    ) -> BestModel:
        return BestModel(
            name=self._name,
            version=state.version or "",
            score=score,
            run=run_id,
            time=state.since or self._clock().isoformat(),
            decided_by=state.decided_by,
            reason=reason,
            replaced_version=replaced,
            change=state.change,
            **_pin_fields(state.pin),
        )

    def _continued(self, record: BestModel | None, state: ChampionState, champion: ModelVersion | None) -> BestModel:
        """The record of the same champion with the registry's pin (rebuilt from the registry's `champion`, the
        version `state` names, when it named another)."""
        if record is None or not _same_champion(record, state):
            score = recorded_score(champion)
            return self._record_of(state, score, "", "recorded from the registry", None)
        return record.model_copy(update=_pin_fields(state.pin))

    def _pin_change(
        self, kind: ChangeKind, version: str, champion: ModelVersion | None, reason: str, actor: str
    ) -> ChampionChange:
        """The history entry of a pin or unpin of `version` (`champion`: its registry entry, for its score)."""
        return ChampionChange(
            at=self._clock(),
            kind=kind,
            model=self._name,
            from_version=version,
            to_version=version,
            decided_by="operator",
            actor=actor,
            reason=reason,
            evidence=f"recorded mAP@0.5 {recorded_score(champion)}",
        )

    def _score_and_run(self, target: ModelVersion, history: list[ChampionChange]) -> tuple[float | None, str]:
        """The score the history gave the version when it was promoted before, else its run's holdout score, else
        its recorded validation score; and the service's run that registered it, when known."""
        earlier = next((c for c in history if c.to_version == target.version and c.kind in _MOVES), None)
        if earlier is not None and earlier.run_id:
            return earlier.score, earlier.run_id
        for run in self._ledger.runs.newest(limit=100):
            if run.decision is not None and run.decision.challenger_version == target.version:
                return run.decision.challenger_score, run.run_id
        return recorded_score(target), ""

    def _version(self, version: str) -> ModelVersion:
        versions = self._registry.model_versions(self._name)
        found = _find(versions, version)
        if found is None:
            known = f"versions {versions[0].version} to {versions[-1].version}" if versions else "no versions"
            raise VersionNotFound(f"{self._name} has no version {version!r} (the registry holds {known})")
        return found

    def _check_files(self, version: ModelVersion) -> None:
        """PromotionRefused when the registry no longer has the version's model files (a champion must load)."""
        with tempfile.TemporaryDirectory() as scratch:
            try:
                self._registry.local_model_path(version, Path(scratch))
            except (FileNotFoundError, ResourceNotFoundError) as error:
                raise PromotionRefused(f"version {version.version} has no model files ({error})") from None

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


_MOVES = (ChangeKind.PROMOTED, ChangeKind.ROLLED_BACK)


def _find(versions: list[ModelVersion], version: str | None) -> ModelVersion | None:
    return next((v for v in versions if v.version == version), None)


def _change_id(decided_by: DecidedBy) -> str:
    return f"{decided_by}-{uuid.uuid4().hex[:12]}"


def _names(record: BestModel, state: ChampionState) -> bool:
    """Whether the record says what the registry says: the same champion, from the same change, with the same pin."""
    return _same_champion(record, state) and record.pinned_reason == (state.pin.reason if state.pin else None)


def _same_champion(record: BestModel, state: ChampionState) -> bool:
    return record.version == state.version and (record.change == state.change or not state.change)


def _pin_fields(pin: Pin | None) -> dict[str, str | None]:
    return {
        "pinned_reason": pin.reason if pin else None,
        "pinned_by": pin.by if pin else None,
        "pinned_at": pin.at if pin else None,
    }


def _few(classes: frozenset[str], shown: int = 5) -> str:
    ordered = sorted(classes, key=lambda c: (len(c), c))
    if not ordered:
        return "none"
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(ordered[:shown]) + more


def _automatic_change(decision: PromotionRecord, run_id: str, clock: Callable[[], datetime]) -> ChampionChange | None:
    """The history entry for a run whose tag step made its challenger the champion (None when it changed nothing).

    Dated when the tag was moved and identified by the run, so recording it again leaves one entry.
    """
    if not decision.champion_change:
        return None
    try:
        at = datetime.fromisoformat(decision.champion_since).astimezone(UTC)
    except ValueError:
        at = clock()
    return ChampionChange(
        at=at,
        kind=ChangeKind.PROMOTED,
        model=decision.name,
        from_version=decision.champion_version,
        to_version=decision.challenger_version,
        decided_by="service",
        actor="service",
        reason=decision.reason,
        evidence=decision.comparison.describe(),
        score=decision.challenger_score,
        run_id=run_id,
        id=f"{at:%Y%m%dT%H%M%SZ}-{hashlib.sha256(run_id.encode()).hexdigest()[:6]}",
    )


def _overruled(entry: ChampionChange, now: ChampionState) -> ChampionChange:
    """The entry of a run's promotion that no longer holds: the champion it made has been replaced since."""
    since = f"version {now.version} is the champion now ({now.decided_by})" if now.version else "no version is best now"
    evidence = "; ".join(e for e in (entry.evidence, f"replaced since: {since}") if e)
    return replace(entry, evidence=evidence)
