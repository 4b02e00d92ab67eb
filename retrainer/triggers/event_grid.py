"""Event Grid trigger: new images (BlobCreated under the image folder) and Azure ML's own run events.

Event Grid delivers at least once and out of order; the ledger records each image version once,
so redelivery and duplicates change nothing. A recorded image may make a batch due at once; the
timer is the safety net for batches that become due later.
"""

from __future__ import annotations

import logging

import azure.functions as func

from retrainer.events import BLOB_CREATED

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("on_event")
@bp.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    from retrainer import bootstrap  # storage and workspace SDKs load on first use, not at cold start

    retraining = bootstrap.retraining()
    data = event.get_json() or {}
    if event.event_type == BLOB_CREATED:
        if retraining.on_blob_created(event.subject or "", data):
            submitted = retraining.submit_if_due_after_event()
            log.info("image recorded: %s%s", event.subject, f"; submitted {submitted}" if submitted else "")
    elif not retraining.on_workspace_event(event.event_type, data):
        log.info("event %s (%s) ignored", event.event_type, event.subject)
