"""ModelPromoted: what the service announces on its Event Grid topic when the best model changes."""

from __future__ import annotations

from collections.abc import Callable

from retrainer.champion.record import BestModel
from retrainer.events import MODEL_PROMOTED
from retrainer.identity import azure_credential
from retrainer.settings import Settings


def model_promoted_publisher(settings: Settings) -> Callable[[BestModel], None] | None:
    """Publishes ModelPromoted to EVENTGRID_TOPIC_ENDPOINT (key, or the function's identity); None when unset."""
    if not settings.EVENTGRID_TOPIC_ENDPOINT:
        return None
    endpoint = settings.EVENTGRID_TOPIC_ENDPOINT
    key = settings.EVENTGRID_TOPIC_KEY

    def publish(record: BestModel) -> None:
        from azure.core.credentials import AzureKeyCredential, TokenCredential
        from azure.eventgrid import EventGridEvent, EventGridPublisherClient

        credential: AzureKeyCredential | TokenCredential
        credential = AzureKeyCredential(key.get_secret_value()) if key is not None else azure_credential()
        event = EventGridEvent(
            subject=f"models/{record.name}/versions/{record.version}",
            event_type=MODEL_PROMOTED,
            data=record.model_dump(),
            data_version="1.0",
        )
        EventGridPublisherClient(endpoint, credential).send([event])

    return publish
