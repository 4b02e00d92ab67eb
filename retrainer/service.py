"""Composition root: builds the storage clients and the ingestor from the settings, once per process."""

from __future__ import annotations

import functools
import logging

from retrainer.datastore import BlobMissingError, Datastore
from retrainer.ingest import LabelIngestor, Layout
from retrainer.labels import parse_label_map
from retrainer.ledger import Ledger
from retrainer.settings import Settings, get_settings

log = logging.getLogger(__name__)


def layout_from(settings: Settings) -> Layout:
    return Layout(settings.IMAGE_FOLDER, settings.LABEL_FOLDER, settings.QUARANTINE_FOLDER)


@functools.cache
def datastore() -> Datastore:
    settings = get_settings()
    return Datastore.from_connection_string(
        settings.storage_connection_string(), settings.STORAGE_ACCOUNT_CONTAINER_NAME
    )


@functools.cache
def ledger() -> Ledger:
    settings = get_settings()
    book = Ledger.from_connection_string(settings.storage_connection_string(), settings.LEDGER_TABLE_PREFIX)
    book.ensure_tables()
    return book


def read_label_map(store: Datastore, blob_path: str) -> dict[str, str] | None:
    """The label map stored in the datastore, or None (class ids unchecked) when there is none."""
    try:
        return parse_label_map(store.read(blob_path), blob_path)
    except BlobMissingError:
        log.info("no label map at %s: class ids are not checked against one", blob_path)
        return None


def label_ingestor(handler: str) -> LabelIngestor:
    """An ingestor with the current label map (read anew, so an updated map applies at once)."""
    settings = get_settings()
    store = datastore()
    return LabelIngestor(
        store, ledger(), layout_from(settings), read_label_map(store, settings.LABEL_MAP_BLOB), handler
    )


def event_publisher(settings: Settings):  # type: ignore[no-untyped-def]
    """Publishes ModelPromoted to EVENTGRID_TOPIC_ENDPOINT (key, or the function's identity); None when unset."""
    if not settings.EVENTGRID_TOPIC_ENDPOINT:
        return None
    endpoint = settings.EVENTGRID_TOPIC_ENDPOINT

    def publish(record: dict) -> None:
        from azure.eventgrid import EventGridEvent, EventGridPublisherClient

        if settings.EVENTGRID_TOPIC_KEY is not None:
            from azure.core.credentials import AzureKeyCredential

            credential = AzureKeyCredential(settings.EVENTGRID_TOPIC_KEY.get_secret_value())
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        event = EventGridEvent(
            subject=f"models/{record['name']}/versions/{record['version']}",
            event_type="PidSymbolRetraining.ModelPromoted",
            data=record,
            data_version="1.0",
        )
        EventGridPublisherClient(endpoint, credential).send([event])

    return publish


@functools.cache
def retraining():  # type: ignore[no-untyped-def]
    """The retraining service of this process (the function app's handlers share it)."""
    from retrainer.retraining import RetrainingService
    from retrainer.workspace import open_workspace

    settings = get_settings()
    return RetrainingService(
        settings,
        ledger(),
        datastore(),
        workspace=lambda: open_workspace(settings),
        on_image=lambda path: label_ingestor(handler="image-landed").ingest_image(path),
        publish=event_publisher(settings),
    )


def reset() -> None:
    """Forget cached clients (tests switch accounts between cases)."""
    datastore.cache_clear()
    ledger.cache_clear()
    retraining.cache_clear()
    get_settings.cache_clear()
