"""Blob trigger: a `.npy` label uploaded under the label folder becomes its AutoML JSONL.

Invalid files are quarantined (not raised), so the host never retries them. Storage errors are
raised: the host retries the event a bounded number of times (maxDequeueCount), then parks it in
the poison queue, where nothing is lost.
"""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger(__name__)

bp = func.Blueprint()


def path_in_container(blob_name: str, container: str) -> str:
    """The host names a blob `<container>/<path>`; the core works with paths inside the container."""
    prefix = container + "/"
    return blob_name[len(prefix) :] if blob_name.startswith(prefix) else blob_name


@bp.function_name("convert_label")
@bp.blob_trigger(
    arg_name="label",
    path="%STORAGE_ACCOUNT_CONTAINER_NAME%/%LABEL_FOLDER%/{name}.npy",
    connection="DATASTORE",
    source=func.BlobSource.EVENT_GRID,
)
def convert_label(label: func.InputStream) -> None:
    from retrainer import bootstrap  # storage SDKs load on first use, not at cold start

    settings = bootstrap.get_settings()
    path = path_in_container(label.name or "", settings.STORAGE_ACCOUNT_CONTAINER_NAME)
    result = bootstrap.label_ingestor(handler="blob-trigger").ingest_label(path)
    log.info("label %s: %s%s", path, result.outcome.value, f" ({result.reason})" if result.reason else "")
