"""Composition root: the only place that builds clients from the settings, once per process.

The function app's handlers, the data loader and the `retrain` command call these; nothing below
them (the service, the ingestion, the workspace backends) imports this module.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from retrainer import telemetry
from retrainer.datastore import Datastore
from retrainer.events import MODEL_PROMOTED
from retrainer.identity import azure_credential
from retrainer.ingestion.ingest import LabelIngestor, Layout, read_label_map
from retrainer.ledger import Ledger
from retrainer.promotion import BestModel
from retrainer.retraining import RetrainingService
from retrainer.settings import Settings, get_settings

log = logging.getLogger(__name__)

__all__ = ["datastore", "event_publisher", "get_settings", "label_ingestor", "ledger", "reset", "retraining"]


def layout_from(settings: Settings) -> Layout:
    return Layout(settings.IMAGE_FOLDER, settings.LABEL_FOLDER, settings.QUARANTINE_FOLDER)


@functools.cache
def datastore() -> Datastore:
    telemetry.configure(get_settings())  # the first handler to run in this process sets telemetry up
    return Datastore.from_settings(get_settings())


@functools.cache
def ledger() -> Ledger:
    book = Ledger.from_settings(get_settings())
    book.ensure_tables()
    return book


def label_ingestor(handler: str) -> LabelIngestor:
    """An ingestor with the current label map (read anew, so an updated map applies at once)."""
    settings = get_settings()
    store = datastore()
    return LabelIngestor(
        store, ledger(), layout_from(settings), read_label_map(store, settings.LABEL_MAP_BLOB), handler
    )


def event_publisher(settings: Settings) -> Callable[[BestModel], None] | None:
    """Publishes ModelPromoted to EVENTGRID_TOPIC_ENDPOINT (key, or the function's identity); None when unset."""
    if not settings.EVENTGRID_TOPIC_ENDPOINT:
        return None
    endpoint = settings.EVENTGRID_TOPIC_ENDPOINT

    def publish(record: BestModel) -> None:
        from azure.core.credentials import AzureKeyCredential, TokenCredential
        from azure.eventgrid import EventGridEvent, EventGridPublisherClient

        credential: AzureKeyCredential | TokenCredential
        if settings.EVENTGRID_TOPIC_KEY is not None:
            credential = AzureKeyCredential(settings.EVENTGRID_TOPIC_KEY.get_secret_value())
        else:
            credential = azure_credential()
        event = EventGridEvent(
            subject=f"models/{record.name}/versions/{record.version}",
            event_type=MODEL_PROMOTED,
            data=record.model_dump(),
            data_version="1.0",
        )
        EventGridPublisherClient(endpoint, credential).send([event])

    return publish


@functools.cache
def retraining() -> RetrainingService:
    """The retraining service of this process (the function app's handlers share it)."""
    from retrainer.workspace import open_runner

    settings = get_settings()
    return RetrainingService(
        settings,
        ledger(),
        datastore(),
        runner=lambda: open_runner(settings),
        on_image=lambda path: label_ingestor(handler="image-landed").ingest_image(path),
        publish=event_publisher(settings),
        sweep_waiting=lambda: label_ingestor(handler="timer-sweep").sweep_waiting(),
    )


def reset() -> None:
    """Forget cached clients (tests switch accounts between cases)."""
    datastore.cache_clear()
    ledger.cache_clear()
    retraining.cache_clear()
    get_settings.cache_clear()
