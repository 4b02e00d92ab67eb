"""Benchmark: what the ledger's frequent reads cost as history grows, keyed layout vs the first layout.

For N recorded images (100 of them pending) and R recorded runs, in a real Azurite, measures:
- the pending check (every image event and timer tick): the first layout's `PartitionKey eq 'images'
  and state eq 'pending'` against the keyed layout's one RowKey range;
- one image event (record the image, then check pending);
- the newest 50 runs (GET /api/runs), the first layout reading every run and sorting, against the
  first rows of the keyed range; and the status page request on the keyed layout.
Each figure is the median time, the entities returned to the client, and ("read") the entities Table
Storage reads to answer: a filter on a property that is not a key scans the whole partition (documented;
Azurite filters in memory and hides it), a key range reads the range.

Azurite cannot reach 10^6 images in reasonable time: each insert looks the row up by PartitionKey
alone, a scan of the ledger's one image partition, so the fill slows as it grows (under 40 images/s at
380,000 on an AMD EPYC Zen 3; docs/benchmarks.md). Larger sizes are accepted, not advised.

    .venv/bin/python bench/ledger.py [--images 1000,100000] [--runs 100,1000,10000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime, timedelta
from pathlib import Path

from azure.data.tables import TableServiceClient, TransactionOperation, UpdateMode

from devtools.azurite import running_azurite
from devtools.machine import cpu_model
from retrainer.ledger import Ledger
from retrainer.ledger.images import ImageRecord, ImageState
from retrainer.ledger.rows import Operation, Table, row_key
from shared.promotion import PromotionRecord
from shared.records import RunRecord, RunState

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 1, tzinfo=UTC)
PENDING = 100


def median_ms(action: Callable[[], object], repeat: int = 7) -> tuple[float, object]:
    timings, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), result


def submit_all(table: Table, operations: list[Operation], per_transaction: int = 100) -> None:
    for start in range(0, len(operations), per_transaction):
        table.submit_transaction(operations[start : start + per_transaction])


def bench_image(i: int) -> ImageRecord:
    """Image i of the history: the first PENDING are pending, the rest trained in one run."""
    path, etag = f"data/images/{i}.jpg", f"0x{i}"
    state = ImageState.PENDING if i < PENDING else ImageState.TRAINED
    return ImageRecord(row_key(f"{path}@{etag}"), path, etag, START, state, "" if i < PENDING else "r")


def fill_chunk(connection_string: str, prefix: str, layout: str, first: int, last: int) -> int:
    """Images first..last-1 in one layout, in a worker process: while the table is small, the SDK's batch
    encoding, not Azurite, bounds one process (about 650 rows/s)."""
    service = TableServiceClient.from_connection_string(connection_string)
    images = (bench_image(i) for i in range(first, last))
    if layout == "keyed":
        return Ledger(service, prefix).images.bulk_import(images)
    legacy = service.get_table_client(f"{prefix}legacyimages")
    rows = [
        {
            "PartitionKey": "images",
            "RowKey": image.key,
            "path": image.path,
            "etag": image.etag,
            "seen": image.seen,
            "state": image.state,
            "run_id": image.run_id,
        }
        for image in images
    ]
    submit_all(legacy, [(TransactionOperation.UPSERT, row) for row in rows])
    return len(rows)


def fill_images(
    connection_string: str, prefix: str, count: int, with_legacy: bool, progress: Callable[[str], None]
) -> None:
    """`count` images through the ledger's own writes (and in the first layout, in `<prefix>legacyimages`)."""
    service = TableServiceClient.from_connection_string(connection_string)
    Ledger(service, prefix).ensure_tables()
    layouts = ["keyed", *(["legacy"] if with_legacy else [])]
    if with_legacy:
        service.get_table_client(f"{prefix}legacyimages").create_table()
    chunk = 10_000
    jobs = [(layout, first, min(first + chunk, count)) for layout in layouts for first in range(0, count, chunk)]
    total, written, started = len(layouts) * count, 0, time.perf_counter()
    with ProcessPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        futures = [pool.submit(fill_chunk, connection_string, prefix, *job) for job in jobs]
        for future in as_completed(futures):
            written += future.result()
            rate = written / (time.perf_counter() - started)
            progress(f"  {written:,} of {total:,} image records written ({rate:,.0f} images/s)")


def measure_images(service: TableServiceClient, prefix: str, count: int, with_legacy: bool) -> list[str]:
    legacy = service.get_table_client(f"{prefix}legacyimages")
    ledger = Ledger(service, prefix)

    def legacy_pending() -> int:
        return sum(1 for _ in legacy.query_entities("PartitionKey eq 'images' and state eq 'pending'"))

    def keyed_pending() -> int:
        return len(ledger.images.pending())

    def legacy_event() -> int:
        path, etag = f"data/images/new-{uuid.uuid4().hex}.jpg", "0x1"
        legacy.create_entity(
            {
                "PartitionKey": "images",
                "RowKey": row_key(f"{path}@{etag}"),
                "path": path,
                "etag": etag,
                "seen": START,
                "state": "trained",
                "run_id": "r",
            }
        )
        return legacy_pending()

    def keyed_event() -> int:
        path = f"data/images/new-{uuid.uuid4().hex}.jpg"
        ledger.images.record(path, "0x1", START)
        found = keyed_pending()
        ledger.images.forget(path, "0x1")
        return found

    measures = [
        ("pending check, first layout", legacy_pending, count),
        ("pending check, keyed", keyed_pending, PENDING),
        ("image event, first layout", legacy_event, count),
        ("image event, keyed", keyed_event, PENDING),
    ]
    rows = []
    for name, action, scanned in measures if with_legacy else measures[1::2]:
        ms, returned = median_ms(action)
        rows.append(f"{count:>9,} images  {name:<30} {ms:9.1f} ms  returned {returned:>6}  read {scanned:>9,}")
    return rows


def run_entity(index: int) -> RunRecord:
    submitted = START + timedelta(minutes=index)
    decision = PromotionRecord(
        name="pid-symbol-detector",
        challenger_version=str(index + 1),
        chosen_version=str(index + 1),
        best_version=str(index + 1),
        promoted=index % 3 == 0,
        challenger_score=0.9,
        reason="bench",
        challenger_per_class={str(c): 0.9 for c in range(1, 25)},
    )
    return RunRecord(
        f"run-{index:06d}",
        "timer",
        "bench",
        40,
        RunState.COMPLETED,
        submitted,
        [{"state": RunState.COMPLETED, "at": submitted.isoformat()}],
        decision=decision,
        ended_at=submitted + timedelta(minutes=90),
        promotion_done=True,
    )


def fill_runs(service: TableServiceClient, prefix: str, count: int, progress: Callable[[str], None]) -> None:
    legacy = service.get_table_client(f"{prefix}legacyruns")
    legacy.create_table()
    ledger = Ledger(service, prefix)
    ledger.ensure_tables()
    keyed = service.get_table_client(f"{prefix}runs")
    legacy_rows, keyed_rows = [], []
    for index in range(count):
        record = run_entity(index)
        body = {
            "trigger": record.trigger,
            "reason": record.reason,
            "image_count": record.image_count,
            "state": record.state.value,
            "submitted_at": record.submitted_at,
            "history": json.dumps(record.history),
            "error": "",
            "decision": record.decision.model_dump_json() if record.decision else "",
            "ended_at": record.ended_at.isoformat() if record.ended_at else "",
            "deadline": "",
            "promotion_done": True,
        }
        legacy_rows.append({"PartitionKey": "runs", "RowKey": record.run_id, **body})
        inverted = 10**13 - int(record.submitted_at.timestamp() * 1000)
        keyed_rows += [
            {"PartitionKey": "runs.v2", "RowKey": f"id|{record.run_id}", "run_id": record.run_id, **body},
            {
                "PartitionKey": "runs.v2",
                "RowKey": f"time|{inverted:013d}|{record.run_id}",
                "run_id": record.run_id,
                **body,
            },
        ]
    submit_all(legacy, [(TransactionOperation.UPSERT, row, {"mode": UpdateMode.REPLACE}) for row in legacy_rows])
    submit_all(keyed, [(TransactionOperation.UPSERT, row, {"mode": UpdateMode.REPLACE}) for row in keyed_rows])
    progress(f"  {count:,} runs recorded")


def measure_runs(service: TableServiceClient, prefix: str, count: int, connection_string: str) -> list[str]:
    from retrainer.datastore import Datastore
    from retrainer.ledger_migration import legacy_run
    from retrainer.settings import load_settings
    from retrainer.status_page import render_status_page
    from retrainer.status_view import StatusView

    legacy = service.get_table_client(f"{prefix}legacyruns")
    ledger = Ledger(service, prefix)

    def legacy_latest() -> int:
        read = (legacy_run(e) for e in legacy.query_entities("PartitionKey eq 'runs'"))
        found = [run for run in read if run is not None]
        return len(sorted(found, key=lambda r: r.submitted_at, reverse=True)[:50])

    def keyed_latest() -> int:
        return len(ledger.runs.newest(limit=50))

    settings = load_settings(
        STORAGE_ACCOUNT_CONNECTION_STRING=connection_string, STORAGE_ACCOUNT_CONTAINER_NAME="bench"
    )
    store = Datastore.from_connection_string(connection_string, "bench")
    store.ensure_container()
    view = StatusView(ledger, store, settings)

    def status_page() -> int:
        snapshot = view.snapshot()
        render_status_page(snapshot)
        return len(snapshot.runs)

    rows = []
    for name, action, scanned in (
        ("latest 50 runs, first layout", legacy_latest, count),
        ("latest 50 runs, keyed", keyed_latest, min(50, count)),
        ("status page, keyed", status_page, None),
    ):
        ms, returned = median_ms(action, repeat=5)
        read = f"{scanned:>9,}" if scanned is not None else f"{min(count, 100):>9,}"
        rows.append(f"{count:>9,} runs    {name:<30} {ms:9.1f} ms  returned {returned:>6}  read {read}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="1000,100000")
    parser.add_argument(
        "--legacy-up-to",
        type=int,
        default=100_000,
        help="fill and time the first layout only up to this many images (it reads all of them by construction)",
    )
    parser.add_argument("--runs", default="100,1000,10000")
    args = parser.parse_args()
    image_sizes = [int(n) for n in args.images.split(",") if n]
    run_sizes = [int(n) for n in args.runs.split(",") if n]
    print(f"machine: {cpu_model()}; Azurite on loopback; {PENDING} pending images in every size", flush=True)
    results: list[str] = []
    with running_azurite(ROOT) as azurite:
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        for count in image_sizes:
            prefix = f"i{count}"
            with_legacy = count <= args.legacy_up_to
            fill_images(azurite.connection_string, prefix, count, with_legacy, lambda line: print(line, flush=True))
            rows = measure_images(service, prefix, count, with_legacy)
            results += rows
            print("\n".join(rows), flush=True)
        for count in run_sizes:
            prefix = f"r{count}"
            fill_runs(service, prefix, count, lambda line: print(line, flush=True))
            results += measure_runs(service, prefix, count, azurite.connection_string)
            print("\n".join(results[-3:]), flush=True)
    print("\nsummary")
    print("\n".join(results))


if __name__ == "__main__":
    main()
