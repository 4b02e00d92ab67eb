"""What the service announces on its Event Grid topic: ModelPromoted when the champion changes, ServingFailed when
a deployment of it or its smoke test failed (traffic stayed where it was)."""

from __future__ import annotations

from collections.abc import Callable

from retrainer.champion.record import BestModel
from retrainer.events import MODEL_PROMOTED, SERVING_FAILED
from retrainer.serving.rollout import ServingStatus
from retrainer.settings import Settings
from shared.identity import azure_credential


def _publisher(settings: Settings) -> Callable[[str, str, dict], None] | None:
    """Sends one event to EVENTGRID_TOPIC_ENDPOINT (key, or the function's identity); None when unset."""
    if not settings.EVENTGRID_TOPIC_ENDPOINT:
        return None
    endpoint = settings.EVENTGRID_TOPIC_ENDPOINT
    key = settings.EVENTGRID_TOPIC_KEY

    def send(event_type: str, subject: str, data: dict) -> None:
        from azure.core.credentials import AzureKeyCredential, TokenCredential
        from azure.eventgrid import EventGridEvent, EventGridPublisherClient

        credential: AzureKeyCredential | TokenCredential
        credential = AzureKeyCredential(key.get_secret_value()) if key is not None else azure_credential()
        event = EventGridEvent(subject=subject, event_type=event_type, data=data, data_version="1.0")
        EventGridPublisherClient(endpoint, credential).send([event])

    return send


def model_promoted_publisher(settings: Settings) -> Callable[[BestModel], None] | None:
    """Publishes ModelPromoted with the champion's record; None when no topic is set."""
    send = _publisher(settings)
    if send is None:
        return None
    return lambda record: send(MODEL_PROMOTED, f"models/{record.name}/versions/{record.version}", record.model_dump())


def serving_failed_publisher(settings: Settings) -> Callable[[ServingStatus], None] | None:
    """Publishes ServingFailed with the serving status; None when no topic is set."""
    send = _publisher(settings)
    if send is None:
        return None
    return lambda status: send(
        SERVING_FAILED, f"endpoints/{status.endpoint}/versions/{status.target}", status.model_dump(mode="json")
    )
