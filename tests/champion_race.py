"""A second process for the champion's race tests: a run's tag step that scores until told to go on, or an operator's
promotion that holds the champion's critical section until told to go on.

    python -m tests.champion_race tag-step VERSION SIGNALS      (prints the tag step's record as JSON)
    python -m tests.champion_race promote VERSION SIGNALS

It reads its settings from the environment, as the service does (LOCAL_WORKSPACE_DIR, the datastore, the ledger).
It writes SIGNALS/started once it is inside the part the test races against, and goes on when SIGNALS/go exists.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline_steps.holdout_scorer import HoldoutScorer, HoldoutScores
from pipeline_steps.tag_model import choose_best
from retrainer.champion.authority import ChampionAuthority
from retrainer.datastore import Datastore
from retrainer.ledger import Ledger
from retrainer.settings import load_settings
from shared.promotion import DifferenceInterval
from shared.records import ModelVersion
from shared.registry.local import LocalModelRegistry

#: A comparison that promotes: the challenger is better beyond doubt.
BETTER = DifferenceInterval(difference=0.2, low=0.1, high=0.3, confidence=0.95, resamples=200)


def wait_for_go(signals: Path) -> None:
    (signals / "started").touch()
    deadline = time.monotonic() + 120
    while not (signals / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.05)


def scorer_that(during: Callable[[], object]) -> HoldoutScorer:
    """A scorer under which the challenger wins, and `during()` happens while it scores."""

    def score(candidate: ModelVersion, incumbent: ModelVersion | None) -> HoldoutScores:
        during()
        return HoldoutScores(0.8, {}, 0.6, {}, BETTER, scored_images=40)

    return score


def main(action: str, version: str, signals: Path) -> int:
    settings = load_settings()
    registry = LocalModelRegistry(settings.LOCAL_WORKSPACE_DIR)
    if action == "tag-step":
        record = choose_best(
            registry, settings.MODEL_BASE_NAME, version, 0.0, scorer_that(lambda: wait_for_go(signals))
        )
        print(record.to_json())
        return 0
    authority = ChampionAuthority(
        settings,
        registry,
        Ledger.from_settings(settings),
        Datastore.from_settings(settings),
        publish=lambda record: wait_for_go(signals),  # inside the critical section, as ModelPromoted is
    )
    print(authority.promote(version, "promoted from another process", "other process").message)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
