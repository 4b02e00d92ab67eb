"""Races of the champion: whoever changes it while a run scores, or at the same moment as another writer, the race
ends with one version tagged best, a best-model record that names it, and a history that says what happened.

On both registries (local MLflow with its lock; Azure ML over the SDK's `Model` entities, which has none), the
operator pins, promotes or rolls back from inside the run's scorer. Locally, the tag step and the operator's
promotion also run in another process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from retrainer.ledger.champion import ChangeKind
from shared.champion.tags import pin_of
from shared.promotion import PromotionRecord
from shared.registry.local import LocalModelRegistry
from tests.champion_race import scorer_that
from tests.champion_world import NAME, World, registry, world
from tests.fakes import fake_models

__all__ = ["registry", "world"]  # the fixtures these tests use

ROOT = Path(__file__).resolve().parents[1]


def assert_settled(world: World, version: str) -> None:
    """One version tagged best, and the record names it with the registry's pin."""
    assert world.best() == [version]
    champion = next(v for v in world.registry.model_versions(NAME) if v.is_best)
    record = world.record()
    assert record is not None and record.version == version
    pin = pin_of(champion)
    assert record.pinned_reason == (pin.reason if pin else None)
    assert [v.version for v in world.registry.model_versions(NAME) if pin_of(v)] in ([], [version])


def test_a_pin_placed_while_the_run_scores_keeps_the_champion_and_the_record_says_why(world: World) -> None:
    world.run(0.60)
    challenger = world.register(0.90)
    decision = world.tag_step(challenger, scorer_that(lambda: world.controls.pin("plant audit", "ana")))
    assert not decision.promoted and decision.best_version == "1" and decision.champion_change == ""
    assert decision.not_applied == "version 1 was pinned by ana (plant audit) while this run scored"
    assert decision.reason.endswith(
        "promoted; not applied: version 1 was pinned by ana (plant audit) while this run scored, so the champion stays"
    )
    world.record_run(decision)
    assert_settled(world, "1")
    assert world.champion_record().pinned_reason == "plant audit"
    kinds = [(c.kind, c.to_version) for c in world.controls.history()]
    assert kinds == [(ChangeKind.PINNED, "1"), (ChangeKind.PROMOTED, "1")]


def test_a_rollback_made_while_the_run_scores_stands_and_the_run_does_not_overrule_it(world: World) -> None:
    world.run(0.60)
    world.run(0.70)
    challenger = world.register(0.90)
    decision = world.tag_step(challenger, scorer_that(lambda: world.controls.promote("1", "2 misses valves", "ana")))
    assert not decision.promoted and decision.best_version == "1"
    assert decision.not_applied == "an operator made version 1 the champion while this run scored"
    world.published.clear()
    world.record_run(decision)
    assert_settled(world, "1")
    record = world.record()
    assert record is not None and (record.decided_by, record.reason) == ("operator", "2 misses valves")
    assert world.published == [], "nothing changed when the run was recorded: no announcement"
    latest = world.controls.history(1)[0]
    assert (latest.kind, latest.from_version, latest.to_version) == (ChangeKind.ROLLED_BACK, "2", "1")

    _, later = world.run(0.95)  # the next run compares against the operator's choice and may replace it
    assert later.promoted and later.champion_version == "1"
    assert_settled(world, "4")
    assert world.champion_record().decided_by == "service"


def test_a_promotion_by_hand_while_the_run_scores_stands(world: World) -> None:
    world.run(0.60)
    world.register(0.65)
    challenger = world.register(0.90)
    decision = world.tag_step(challenger, scorer_that(lambda: world.controls.promote("2", "the plant's choice", "bo")))
    assert not decision.promoted and decision.not_applied == (
        "an operator made version 2 the champion while this run scored"
    )
    world.record_run(decision)
    assert_settled(world, "2")


@pytest.mark.parametrize("registry", ["azureml"], indirect=True)
@pytest.mark.parametrize("storage", ["memory"], indirect=True)
def test_on_azure_ml_a_pin_landing_between_the_runs_check_and_its_write_wins(world: World) -> None:
    """Azure ML has no lock: the pin lands after the tag step's re-read, as it writes. The pin outranks the run."""
    world.run(0.60)
    challenger = world.register(0.90)
    models = fake_models(world.registry)
    scored = threading.Event()

    def operator_pins_as_the_step_writes(version: str) -> None:
        if scored.is_set() and version == "1":
            models.before_get = None
            world.controls.pin("audit", "ana")

    models.before_get = operator_pins_as_the_step_writes
    decision = world.tag_step(challenger, scorer_that(scored.set))
    assert not decision.promoted and decision.best_version == "1"
    assert decision.not_applied == "version 1 was pinned by ana (audit) at the same moment"
    world.record_run(decision)
    assert_settled(world, "1")
    assert world.champion_record().pinned_reason == "audit"


@pytest.mark.parametrize("registry", ["azureml"], indirect=True)
@pytest.mark.parametrize("storage", ["memory"], indirect=True)
def test_on_azure_ml_a_run_recorded_after_a_race_it_lost_leaves_the_record_on_the_operators_choice(
    world: World,
) -> None:
    """The run's tag step applied its promotion, then the operator rolled back before the run was recorded."""
    world.run(0.60)
    decision = world.tag_step(world.register(0.90))
    assert decision.promoted and decision.champion_change
    world.controls.promote("1", "2 is wrong", "ana")
    run_id = world.record_run(decision)
    assert_settled(world, "1")
    entry = next(c for c in world.controls.history() if c.run_id == run_id)
    assert entry.kind == ChangeKind.PROMOTED and "replaced since: version 1 is the champion now (operator)" in (
        entry.evidence
    )


# --- the same races from another process, on the local registry and Azurite ------------------------------------


def other_process(world: World, action: str, version: str, signals: Path) -> subprocess.Popen[str]:
    """`tests/champion_race.py` in a process of its own, on this world's local registry and storage (Azurite)."""
    assert isinstance(world.registry, LocalModelRegistry), "another process shares only a local registry"
    env = {**os.environ, "WORKSPACE_BACKEND": "local", "LOCAL_WORKSPACE_DIR": str(world.registry.root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.champion_race", action, version, str(signals)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (signals / "started").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the other process never started"
        time.sleep(0.05)
    return process


def finished(process: subprocess.Popen[str], signals: Path) -> str:
    (signals / "go").touch()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out


@pytest.mark.parametrize("registry", ["local"], indirect=True)
@pytest.mark.parametrize("storage", ["azurite"], indirect=True)
def test_a_pin_from_this_process_while_another_process_scores_a_run_keeps_the_champion(
    world: World, tmp_path: Path
) -> None:
    world.run(0.60)
    challenger = world.register(0.90)
    tag_step = other_process(world, "tag-step", challenger.version, tmp_path)
    world.controls.pin("audit", "ana")  # the scoring process holds no lock: the pin does not wait for it
    decision = PromotionRecord.from_json(finished(tag_step, tmp_path))
    assert not decision.promoted and decision.not_applied == "version 1 was pinned by ana (audit) while this run scored"
    world.record_run(decision)
    assert_settled(world, "1")


@pytest.mark.parametrize("registry", ["local"], indirect=True)
@pytest.mark.parametrize("storage", ["azurite"], indirect=True)
@pytest.mark.parametrize("door", ["pin", "unpin"])
def test_pin_and_unpin_wait_for_a_promotion_in_another_process_and_apply_to_its_result(
    world: World, tmp_path: Path, door: str
) -> None:
    world.run(0.60)
    world.register(0.70)
    if door == "unpin":
        world.controls.pin("audit", "ana")
        world.clock.advance(minutes=1)
    promotion = other_process(world, "promote", "2", tmp_path)  # holds the critical section until told to go on
    done = threading.Event()
    call = (lambda: world.controls.pin("audit", "ana")) if door == "pin" else (lambda: world.controls.unpin("ana"))

    def operator_acts() -> None:
        call()
        done.set()

    operator = threading.Thread(target=operator_acts)
    operator.start()
    assert not done.wait(1.0), f"{door} waited for the promotion in the other process"
    assert "promoted pid-symbol-detector version 2" in finished(promotion, tmp_path)
    operator.join(timeout=60)
    assert done.is_set()
    assert_settled(world, "2")
    record = world.record()
    assert record is not None and record.decided_by == "operator"
    assert (record.pinned_reason is not None) == (door == "pin")
    latest = world.controls.history(2)  # the other process dates its entry by the real clock, this one by the test's
    operators_change = ChangeKind.PINNED if door == "pin" else ChangeKind.UNPINNED
    assert {c.kind for c in latest} == {operators_change, ChangeKind.PROMOTED}
