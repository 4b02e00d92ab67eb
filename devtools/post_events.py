"""Announce blobs already in storage to a running `func start`, as Event Grid would.

    post-blob-events [--host http://localhost:7071] [--labels] [--function on_event]

Core Tools exposes Event Grid-triggered functions at `/runtime/webhooks/EventGrid?functionName=...`
and Event Grid-sourced blob triggers at `/runtime/webhooks/blobs?functionName=Host.Functions.<name>`.
Locally nothing sends those events (Azurite has no Event Grid), so this command does: one
BlobCreated event per image (and, with --labels, per label file) in the configured container.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
import uuid
from datetime import UTC, datetime

from retrainer.events import BLOB_CREATED, build_subject
from retrainer.redact import redact


def blob_created_event(container: str, path: str, etag: str, length: int) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/local/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
        "subject": build_subject(container, path),
        "eventType": BLOB_CREATED,
        "eventTime": datetime.now(UTC).isoformat(),
        "dataVersion": "1",
        "metadataVersion": "1",
        "data": {
            "api": "PutBlob",
            "eTag": etag,
            "contentLength": length,
            "blobType": "BlockBlob",
            "url": f"http://127.0.0.1:10000/devstoreaccount1/{container}/{path}",
        },
    }


def post(url: str, events: list[dict]) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(events).encode(),
        headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="post-blob-events", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="http://localhost:7071", help="where `func start` listens")
    parser.add_argument("--function", default="on_event", help="the Event Grid-triggered function")
    parser.add_argument("--labels", action="store_true", help="also announce .npy labels to the blob trigger")
    args = parser.parse_args(argv)
    from retrainer import bootstrap

    settings = bootstrap.get_settings()
    store = bootstrap.datastore()
    targets = [(settings.IMAGE_FOLDER, f"{args.host}/runtime/webhooks/EventGrid?functionName={args.function}")]
    if args.labels:
        targets.append(
            (settings.LABEL_FOLDER, f"{args.host}/runtime/webhooks/blobs?functionName=Host.Functions.convert_label")
        )
    sent = 0
    try:
        for folder, url in targets:
            for blob in store.list(folder + "/"):
                if folder == settings.LABEL_FOLDER and not blob.name.endswith(".npy"):
                    continue
                event = blob_created_event(
                    settings.STORAGE_ACCOUNT_CONTAINER_NAME, blob.name, store.etag(blob.name), blob.size
                )
                post(url, [event])
                sent += 1
    except OSError as error:
        print(f"post-blob-events: {redact(str(error))} (is `func start` running at {args.host}?)", file=sys.stderr)
        return 1
    print(f"posted {sent} BlobCreated events to {args.host}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
