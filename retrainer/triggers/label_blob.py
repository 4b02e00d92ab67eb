"""Blob trigger: a `.npy` label uploaded under the label folder becomes its AutoML JSONL.

The trigger binds a BlobClient (an SDK-type binding): the host passes only the blob's name, not its
content, so an oversized label is never loaded into the host or the worker; the ingestor checks its
size and reads it itself, with the ETag its later moves depend on.

What the binding costs: the worker needs the BlobClient type when it indexes the app, so importing
`function_app` loads `azure.storage.blob` (the figure is in docs/benchmarks.md). The cost is moved,
not added: every handler's first call imports the composition root, which loads it too. The bound
client is a reference only, not the read handle: `retrainer.datastore` stays the one module that
reads and moves blobs.

Invalid files are quarantined (not raised), so the host never retries them. Storage errors are
raised: the host retries the event a bounded number of times (maxDequeueCount), then parks it in
the poison queue, where nothing is lost.
"""

# No `from __future__ import annotations` here: the worker recognises the SDK-type binding by the
# parameter's annotation, which must be the class itself, not a string.

import logging

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_binding

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("convert_label")
@bp.blob_trigger(
    arg_name="label",
    path="%STORAGE_ACCOUNT_CONTAINER_NAME%/%LABEL_FOLDER%/{name}.npy",
    connection="DATASTORE",
    source=func.BlobSource.EVENT_GRID,
)
def convert_label(label: blob_binding.BlobClient) -> None:
    from retrainer import bootstrap  # the ledger, numpy and pydantic load on first use, not at cold start

    path = label.blob_name
    result = bootstrap.label_ingestor(handler="blob-trigger").ingest_label(path)
    log.info("label %s: %s%s", path, result.outcome.value, f" ({result.reason})" if result.reason else "")
