"""Composition root: the only place that builds clients from the settings, once per process.

The function app's handlers, the data loader and the `retrain` command call these; nothing below
them (the service, the ingestion, the workspace backends) imports this module.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from retrainer import telemetry
from retrainer.champion.authority import ChampionAuthority
from retrainer.datastore import Datastore
from retrainer.ingestion.ingest import LabelIngestor, Layout, read_label_map
from retrainer.ledger import Ledger
from retrainer.ledger.rows import now_utc
from retrainer.ledger_migration import ensure_current_layout
from retrainer.publisher import model_promoted_publisher, serving_failed_publisher
from retrainer.retraining import RetrainingService
from retrainer.settings import Settings, get_settings
from retrainer.status_view import StatusView
from retrainer.workspace import PipelineRunner
from shared.identity import signed_in_credential
from shared.registry import open_registry

if TYPE_CHECKING:
    from retrainer.serving.endpoint import Endpoint
    from retrainer.serving.rollout import Rollout
    from retrainer.serving.smoke import SmokeSample

__all__ = [
    "champion",
    "datastore",
    "get_settings",
    "label_ingestor",
    "ledger",
    "reset",
    "retraining",
    "runner_for",
    "service_for",
    "serving",
    "serving_rollout",
    "status_view",
]


def layout_from(settings: Settings) -> Layout:
    return Layout(settings.IMAGE_FOLDER, settings.LABEL_FOLDER, settings.QUARANTINE_FOLDER)


@functools.cache
def datastore() -> Datastore:
    telemetry.configure(get_settings())  # the first handler to run in this process sets telemetry up
    return Datastore.from_settings(get_settings())


@functools.cache
def ledger() -> Ledger:
    """The ledger of this process: its tables made, and a ledger of the first layout migrated (once: after that
    one point read of the layout marker per process)."""
    book = Ledger.from_settings(get_settings())
    book.ensure_tables()
    ensure_current_layout(book)
    return book


def label_ingestor(handler: str) -> LabelIngestor:
    """An ingestor with the current label map (read anew, so an updated map applies at once)."""
    settings = get_settings()
    store = datastore()
    return LabelIngestor(
        store, ledger(), layout_from(settings), read_label_map(store, settings.LABEL_MAP_BLOB), handler
    )


@functools.cache
def retraining() -> RetrainingService:
    """The retraining service of this process (the function app's handlers share it)."""
    return service_for(get_settings())


def status_view() -> StatusView:
    """What the status page reads: this process's ledger and datastore."""
    return StatusView(ledger(), datastore(), get_settings())


def accepted_classes() -> frozenset[str] | None:
    """The class ids of the label map (LABEL_MAP_BLOB), or None when the datastore has none."""
    label_map = read_label_map(datastore(), get_settings().LABEL_MAP_BLOB)
    return frozenset(label_map) if label_map else None


def champion(settings: Settings | None = None) -> ChampionAuthority:
    """The champion's authority: the registry `settings` point at (the `retrain` command's --backend; the app's
    own by default), this process's ledger and datastore, the label map's classes and the ModelPromoted topic."""
    settings = settings or get_settings()
    return ChampionAuthority(
        settings,
        open_registry(settings),
        ledger(),
        datastore(),
        accepted_classes=accepted_classes,
        publish=model_promoted_publisher(settings),
    )


def serving_rollout(settings: Settings, endpoint: Endpoint) -> Rollout:
    """The rollout that makes `endpoint` follow the champion of the registry `settings` point at: smoke-tested on
    holdout sheets from this process's datastore, its status in SERVING_STATUS_BLOB, ServingFailed on the topic."""
    from retrainer.serving.rollout import Champion, Rollout, ServingRule
    from retrainer.serving.smoke import SmokeTest, holdout_sheets
    from retrainer.serving.status import status_store
    from shared.champion.tags import recorded_score

    authority = champion(settings)
    registry = open_registry(settings)

    def current() -> Champion | None:
        version = authority.champion()
        if version is None:
            return None
        record = authority.record()
        score = record.score if record is not None and record.version == version.version else None
        return Champion(version, score if score is not None else recorded_score(version))

    def sheets() -> SmokeSample:
        def document() -> bytes | None:
            latest = registry.latest_versioned_document(settings.SPLIT_ASSIGNMENT_NAME)
            return latest[1] if latest else None

        return holdout_sheets(document, datastore(), layout_from(settings), settings.SERVING_SMOKE_SHEETS)

    rule = ServingRule(settings.SERVING_CANARY_PERCENT, settings.SERVING_CANARY_MINUTES, settings.SERVING_RETRY_MINUTES)
    return Rollout(
        endpoint,
        current,
        SmokeTest(sheets, settings.SERVING_SMOKE_TOLERANCE),
        status_store(datastore(), settings.SERVING_STATUS_BLOB),
        rule,
        now_utc,
        serving_failed_publisher(settings),
    )


@functools.cache
def serving() -> Rollout | None:
    """The rollout the monitor timer ticks: the Azure ML managed online endpoint SERVING_ENDPOINT_NAME following the
    champion. None, and not one call to Azure ML, when SERVING_ENDPOINT_NAME is unset or the backend is local
    (there `retrain serve` serves the champion)."""
    settings = get_settings()
    if not settings.SERVING_ENDPOINT_NAME or settings.backend() != "azureml":
        return None
    from retrainer.serving.azureml import AzureMLEndpoint

    return serving_rollout(settings, AzureMLEndpoint.from_settings(settings))


def runner_for(settings: Settings) -> PipelineRunner:
    """The pipeline runner `settings` point at, handed what warm start checks on Azure ML: the label map's classes."""
    from retrainer.workspace import open_runner

    return open_runner(settings, accepted_classes=accepted_classes)


def service_for(settings: Settings) -> RetrainingService:
    """A retraining service whose runner follows `settings` (the `retrain` command's --backend); storage is
    the process's own."""
    return RetrainingService(
        settings,
        ledger(),
        runner=lambda: runner_for(settings),
        champion=lambda: champion(settings),
        on_image=lambda path: label_ingestor(handler="image-landed").ingest_image(path),
        sweep_waiting=lambda: label_ingestor(handler="timer-sweep").sweep_waiting(),
    )


def reset() -> None:
    """Forget cached clients (tests switch accounts between cases)."""
    datastore.cache_clear()
    ledger.cache_clear()
    retraining.cache_clear()
    serving.cache_clear()
    get_settings.cache_clear()
    signed_in_credential.cache_clear()
