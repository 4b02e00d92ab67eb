"""post-blob-events: BlobCreated events for stored blobs, posted as Event Grid posts them to `func start`."""

from __future__ import annotations

import pytest

from devtools import post_events
from retrainer.datastore import Datastore
from tests.helpers import jpeg_bytes, listening_server


@pytest.mark.usefixtures("service_env")
def test_events_reach_the_webhooks_core_tools_exposes(datastore: Datastore, container_name: str) -> None:
    datastore.write("data/images/a.jpg", jpeg_bytes(20, 20))
    datastore.write("data/labels/a_symbols.npy", b"npy")
    datastore.write("data/labels/a.jsonl", b"{}")
    with listening_server(status=202) as (url, received):
        code = post_events.main(["--host", url, "--labels"])
    assert code == 0
    paths = [post.path for post in received]
    assert paths == [
        "/runtime/webhooks/EventGrid?functionName=on_event",
        "/runtime/webhooks/blobs?functionName=Host.Functions.convert_label",
    ]
    (event,) = received[0].events()
    assert received[0].headers["aeg-event-type"] == "Notification"
    assert event["eventType"] == "Microsoft.Storage.BlobCreated"
    assert event["subject"] == f"/blobServices/default/containers/{container_name}/blobs/data/images/a.jpg"
    assert event["data"]["eTag"] == datastore.etag("data/images/a.jpg") and event["data"]["api"] == "PutBlob"


@pytest.mark.usefixtures("service_env")
def test_no_host_listening_is_a_clear_error(datastore: Datastore, capsys: pytest.CaptureFixture[str]) -> None:
    datastore.write("data/images/a.jpg", jpeg_bytes(20, 20))
    assert post_events.main(["--host", "http://127.0.0.1:9"]) == 1
    assert "is `func start` running" in capsys.readouterr().err
