"""Event Grid trigger: new images (BlobCreated under the image folder) and Azure ML's own run events.

Event Grid delivers at least once and out of order, in its own schema or as CloudEvents 1.0; the
ledger records each image version once, so redelivery and duplicates change nothing. A recorded
image may make a batch due at once; the timer is the safety net for batches that become due later.
An event that names nothing of ours is logged and dropped, never raised (a raise would only make
Event Grid redeliver it until it dead-letters).
"""

from __future__ import annotations

import logging

import azure.functions as func

from retrainer.events import Ignored, ImageUploaded, RunChanged, read_event, to_command

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("on_event")
@bp.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    from retrainer import bootstrap  # storage and workspace SDKs load on first use, not at cold start

    received = read_event(event)
    command = to_command(received)
    if isinstance(command, Ignored):
        log.info("event ignored: %s", command.reason, extra={"event_id": received.id})
        return
    retraining = bootstrap.retraining()
    if isinstance(command, ImageUploaded):
        if retraining.on_image_uploaded(command):
            submitted = retraining.submit_if_due_after_event()
            log.info(
                "image recorded: %s%s",
                command.blob.path[:300],
                f"; submitted {submitted}" if submitted else "",
                extra={"event_id": received.id},
            )
    elif isinstance(command, RunChanged) and not retraining.on_run_changed(command):
        log.info("run event for %s, which is not ours: ignored", command.run_id, extra={"event_id": received.id})
