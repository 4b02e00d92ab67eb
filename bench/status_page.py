"""Benchmark: GET /api/status with hundreds of runs, against GET /api/runs (JSON) in the same run.

Both read the same real ledger (Azurite) holding N completed runs with promotion records; the page
also renders the HTML with its charts. Reports the median of several requests, the page's size and
the ratio to the JSON listing.

    .venv/bin/python bench/status_page.py [--runs 500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devtools.azurite import running_azurite
from retrainer.datastore import Datastore
from retrainer.ledger import Ledger, RunRecord
from retrainer.promotion import PromotionRecord
from retrainer.retraining import RetrainingService
from retrainer.settings import load_settings
from retrainer.status_page import render_status_page
from retrainer.status_view import StatusView
from retrainer.workspace import RunState

ROOT = Path(__file__).resolve().parent.parent


def fill(ledger: Ledger, runs: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index in range(runs):
        decision = PromotionRecord(
            name="pid-symbol-detector",
            candidate_version=str(index + 1),
            chosen_version=str(index + 1),
            best_version=str(index + 1),
            promoted=index % 3 == 0,
            candidate_score=0.7 + (index % 25) / 100,
            reason="bench",
            candidate_per_class={str(c): 0.8 for c in range(24)},
        )
        submitted = start + timedelta(hours=index)
        ledger.save_run(
            RunRecord(
                f"run-{index:05d}",
                "timer",
                "bench",
                40,
                RunState.COMPLETED,
                submitted,
                [{"state": "queued", "at": submitted.isoformat()}, {"state": "completed", "at": submitted.isoformat()}],
                decision=decision,
                ended_at=submitted + timedelta(minutes=90),
                promotion_done=True,
            )
        )


def median_seconds(action, repeats: int = 7) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with running_azurite(ROOT) as azurite:
        os.environ.update(STORAGE_ACCOUNT_CONNECTION_STRING=azurite.connection_string, WORKSPACE_BACKEND="local")
        settings = load_settings()
        ledger = Ledger.from_settings(settings)
        ledger.ensure_tables()
        store = Datastore.from_settings(settings)
        store.ensure_container()
        fill(ledger, args.runs)
        service = RetrainingService(settings, ledger, store, runner=lambda: None)  # type: ignore[arg-type,return-value]
        view = StatusView(service, settings, store)
        page = render_status_page(view.snapshot())
        status = median_seconds(lambda: render_status_page(view.snapshot()))
        listing = median_seconds(
            lambda: json.dumps(
                {"runs": [r.as_dict() for r in service.runs()], "pending": service.pending_batch().count}
            )
        )
        render_only = median_seconds(lambda: render_status_page(view.snapshot()), repeats=1)
        snapshot = view.snapshot()
        render = median_seconds(lambda: render_status_page(snapshot))
    print(
        f"status page, {args.runs} runs: {status * 1000:.0f} ms per request ({render * 1000:.1f} ms of it rendering),"
    )
    print(f"  {len(page) / 1024:.0f} KiB of HTML; GET /api/runs on the same ledger: {listing * 1000:.0f} ms")
    print(f"ratio: {status / listing:.2f}x the JSON listing (single request {render_only * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
