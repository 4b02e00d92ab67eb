"""The champion's world for tests: a registry (local MLflow, or Azure ML answering with the SDK's own `Model`
entities), the service recording runs, and the champion's authority.

Fixtures are imported by the test modules that use them.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from pipeline_steps.holdout_scorer import HoldoutScorer
from pipeline_steps.tag_model import choose_best
from retrainer.champion.authority import ChampionAuthority
from retrainer.champion.record import BestModel, read_best_model
from retrainer.datastore import BlobStore
from retrainer.ledger import Ledger
from retrainer.retraining import RetrainingService
from retrainer.settings import load_settings
from shared.promotion import PromotionRecord
from shared.records import ModelVersion, RunState
from shared.registry import ModelRegistry
from shared.registry.local import LocalModelRegistry
from tests.fakes import FakeMLClient, FakeRunner, azureml_registry, fake_models
from tests.helpers import Clock

NAME = "pid-symbol-detector"
CLASSES = frozenset({"1", "2", "3"})


@pytest.fixture(params=["local", "azureml"])
def registry(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    if request.param == "local":
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            monkeypatch.delenv(variable, raising=False)
        (tmp_path / "workspace").mkdir()
        shutil.copy(request.getfixturevalue("empty_mlflow_db"), tmp_path / "workspace" / "mlflow.db")
        return LocalModelRegistry(tmp_path / "workspace")
    return azureml_registry(FakeMLClient())


class World:
    """The registry, the service recording runs, and the operator's controls, on one storage."""

    def __init__(self, registry: ModelRegistry, storage: tuple[Ledger, BlobStore], clock: Clock, tmp_path: Path):
        self.registry, (self.ledger, self.datastore), self.clock, self.tmp_path = registry, storage, clock, tmp_path
        self.published: list[BestModel] = []
        self.runner = FakeRunner()
        settings = load_settings()
        self.controls = ChampionAuthority(
            settings, registry, self.ledger, self.datastore, lambda: CLASSES, self.published.append, clock
        )
        self.service = RetrainingService(
            settings,
            self.ledger,
            runner=lambda: self.runner,
            champion=lambda: self.controls,
            clock=clock,
        )

    def register(self, score: float, classes: frozenset[str] = CLASSES) -> ModelVersion:
        folder = self.tmp_path / f"model-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        (folder / "MLmodel").write_text("flavors: {}\n")
        tags = {"mean_average_precision": f"{score:.6f}", "class_ids": json.dumps(sorted(classes))}
        return self.registry.register_model(NAME, folder, description="", tags=tags)

    def run(self, score: float, scorer: HoldoutScorer | None = None) -> tuple[str, PromotionRecord]:
        """A run: a new version registered, the real tag step's decision, and the service recording the run."""
        version = self.register(score)
        decision = self.tag_step(version, scorer)
        return self.record_run(decision), decision

    def tag_step(self, version: ModelVersion, scorer: HoldoutScorer | None = None) -> PromotionRecord:
        self.clock.advance(minutes=20)  # a run trains before its tag step decides
        return choose_best(self.registry, NAME, version.version, 0.0, scorer=scorer, clock=self.clock)

    def record_run(self, decision: PromotionRecord) -> str:
        self.clock.advance(minutes=30)
        run_id = self.service.submit("manual", "new images")
        self.runner.finish(run_id, RunState.COMPLETED, decision)
        self.clock.advance(minutes=5)
        assert self.service.follow_run(run_id) == RunState.COMPLETED
        self.clock.advance(minutes=1)  # what comes next is later: the history is ordered by time
        return run_id

    def best(self) -> list[str]:
        return [v.version for v in self.registry.model_versions(NAME) if v.is_best]

    def record(self) -> BestModel | None:
        return read_best_model(self.datastore, "models/best_model.json")

    def champion_record(self) -> BestModel:
        """The champion's record, which the test expects to be there."""
        record = self.record()
        assert record is not None, "no best-model record"
        return record

    def lose_files(self, version: str) -> None:
        if isinstance(self.registry, LocalModelRegistry):
            shutil.rmtree(next(v.uri for v in self.registry.model_versions(NAME) if v.version == version))
        else:
            fake_models(self.registry).lose_files(version)


@pytest.fixture
def world(registry: ModelRegistry, storage: tuple[Ledger, BlobStore], clock: Clock, tmp_path: Path) -> World:
    return World(registry, storage, clock, tmp_path)
