"""`make demo`: the whole retraining loop on this machine, with no Azure account.

1. starts Azurite and generates a synthetic P&ID image set in two batches;
2. loads batch 1 with the data loader, then announces each image with a BlobCreated event through
   the function app's own Event Grid handler;
3. lets the timer handler submit and follow a local run (the pipeline's steps, CPU training, MLflow registry);
4. drops batch 2 the same way, and shows the second model compared with the first and the decision
   (batch 2 brings a symbol type batch 1 lacks, as a real deployment meets new ones);
5. the local endpoint (`retrain serve`, started with Azurite) has followed the champion all along: one unseen
   sheet goes to it, and the symbols that came back are counted and drawn on the sheet;
6. prints a summary table and the paths of the evaluation report, the status page and the picture.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.records import RunState

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The score from which the demo counts and draws a detection (the endpoint answers every box its model keeps).
SHOWN_SCORE = 0.5
#: The symbol type that first appears in batch 2 (a ball valve): from the shipped base model, the first
#: model scores 1.000 on its holdout after 8 epochs, so only something new can show a promotion.
ARRIVING_CLASS = "4"


def configure(workdir: Path, connection_string: str, batch_size: int, training: argparse.Namespace) -> None:
    os.environ.update(
        {
            "STORAGE_ACCOUNT_CONNECTION_STRING": connection_string,
            "STORAGE_ACCOUNT_CONTAINER_NAME": "data",
            "LEDGER_TABLE_PREFIX": "demo",
            "WORKSPACE_BACKEND": "local",
            "LOCAL_WORKSPACE_DIR": str(workdir / "workspace"),
            "LOCAL_TRAINING_MINUTES": str(training.minutes),
            "LOCAL_TRAINING_EPOCHS": str(training.epochs),
            "LOCAL_WARM_START_EPOCHS": str(training.warm_epochs),
            "RETRAIN_MIN_NEW_IMAGES": str(batch_size),
            "RETRAIN_QUIET_MINUTES": "0",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "LOCAL_SERVING_ENVIRONMENT": str(PROJECT_ROOT / ".venv-serving"),
        }
    )
    for variable in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME", "MLFLOW_TRACKING_URI"):
        os.environ.pop(variable, None)


def handlers() -> dict[str, Callable[..., Any]]:
    import function_app

    return {str(fn.get_function_name()): fn.get_user_function() for fn in function_app.app.get_functions()}


def announce_images(handler: Callable[[Any], None], since: set[str]) -> int:
    """A BlobCreated event per image the datastore holds that was not announced before, as Event Grid sends them."""
    import azure.functions as func

    from retrainer import bootstrap
    from retrainer.events import BLOB_CREATED, build_subject

    settings = bootstrap.get_settings()
    store = bootstrap.datastore()
    sent = 0
    for blob in store.list(settings.IMAGE_FOLDER + "/"):
        if blob.name in since:
            continue
        since.add(blob.name)
        data: dict[str, object] = {
            "api": "PutBlob",
            "eTag": store.etag(blob.name),
            "url": f"http://127.0.0.1/data/{blob.name}",
        }
        event = func.EventGridEvent(
            id=f"demo-{sent}",
            data=data,
            topic="azurite",
            subject=build_subject(settings.STORAGE_ACCOUNT_CONTAINER_NAME, blob.name),
            event_type=BLOB_CREATED,
            event_time=datetime.now(UTC),
            data_version="1",
        )
        handler(event)
        sent += 1
    return sent


def follow_until_done(monitor: Callable[[Any], None], started: float, poll_seconds: float = 5.0) -> str:
    """Tick the timer handler until the active run ends, showing each step as it starts."""
    from azure.functions.timer import TimerRequest

    from retrainer import bootstrap

    retraining = bootstrap.retraining()
    shown = ""
    run_id = None
    while True:
        monitor(TimerRequest(past_due=False))
        active = bootstrap.ledger().slot.read().active_runs
        if active:
            run_id = active[0]
            status = retraining.runner.run_status(run_id)
            step = status.detail or str(status.state)
            if step != shown:
                print(f"      {_elapsed(started)}  {run_id}: {step}", flush=True)
                shown = step
        elif run_id is not None:
            return run_id
        time.sleep(poll_seconds)


def _elapsed(started: float) -> str:
    seconds = int(time.perf_counter() - started)
    return f"{seconds // 60:2d}:{seconds % 60:02d}"


def training_notes(run_id: str) -> str:
    """How the run's model was trained (warm start or scratch, epochs, a budget cut), from the train step's log."""
    from retrainer.settings import get_settings
    from retrainer.workspace.local import LocalPipelineRunner

    log = LocalPipelineRunner(get_settings().LOCAL_WORKSPACE_DIR).run_log(run_id, "train")
    keys = ("warm start from", "started from the base model", "trained from scratch", "the time budget cut")
    notes = [line.strip() for line in log.splitlines() if line.strip().startswith(keys) or "planned epochs" in line]
    return "; ".join(dict.fromkeys(notes))


def ask_the_endpoint(url: str, seed: int, picture: Path) -> str:
    """Send one sheet no model trained or was scored on; count what came back by class and draw it on the sheet."""
    from PIL import ImageDraw

    from devtools.synthetic import LABEL_MAP, encode_jpeg, generate_sheet
    from retrainer.serving.contract import detections, scoring_request

    sheet = generate_sheet(seed + 1000, 0)  # a seed no batch used: unseen
    body = json.dumps(scoring_request([encode_jpeg(sheet.image)])).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        (found,) = detections(json.loads(response.read()), 1)
    confident = [d for d in found if d.score >= SHOWN_SCORE]
    image = sheet.image.copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    names = {class_id: name.rsplit("/", 1)[-1].lower() for class_id, name in LABEL_MAP.items()}
    for d in confident:
        box = (d.top_x * width, d.top_y * height, d.bottom_x * width, d.bottom_y * height)
        draw.rectangle(box, outline=(220, 30, 30), width=2)
        draw.text((box[0], max(0.0, box[1] - 11)), f"{names.get(d.label, d.label)} {d.score:.2f}", fill=(220, 30, 30))
    image.save(picture)
    counts = Counter(names.get(d.label, d.label) for d in confident)
    listed = ", ".join(f"{count} {name}" for name, count in counts.most_common())
    drawn = Counter(row[2] for row in sheet.rows)
    truth = ", ".join(f"{count} {names[c]}" for c, count in drawn.most_common())
    return (
        f"{len(confident)} symbols at score {SHOWN_SCORE:g} or more ({listed or 'none'}; {len(found)} boxes in all); "
        f"the sheet holds {len(sheet.rows)} ({truth})"
    )


def summary(workdir: Path) -> str:
    from retrainer import bootstrap
    from retrainer.champion.record import current_best_model
    from shared.champion.tags import SCORE_TAG, VALIDATION_IMAGES_TAG
    from shared.registry import open_registry

    settings = bootstrap.get_settings()
    registered = {v.version: v for v in open_registry(settings).model_versions(settings.MODEL_BASE_NAME)}
    rows = []
    for run in reversed(bootstrap.ledger().runs.newest()):
        decision = run.decision
        tags = (
            registered[decision.challenger_version].tags
            if decision and decision.challenger_version in registered
            else {}
        )
        validated = (
            f"{float(tags[SCORE_TAG]):.3f} on {tags.get(VALIDATION_IMAGES_TAG, '?')}"
            if SCORE_TAG in tags
            else "not validated"
        )
        score = f"{decision.challenger_score:.3f}" if decision else "-"
        champion = f"{decision.champion_score:.3f}" if decision and decision.champion_score is not None else "-"
        interval = decision.comparison.interval if decision else None
        difference = interval.words() if interval else "-"
        verdict = "promoted" if decision and decision.promoted else "kept the best"
        version = decision.challenger_version if decision else "-"
        rows.append(
            [
                run.run_id,
                run.trigger,
                str(run.image_count),
                run.state.value,
                version,
                validated,
                score,
                champion,
                difference,
                verdict,
            ]
        )
    header = [
        "run",
        "trigger",
        "new images",
        "state",
        "version",
        "validation mAP@0.5 on sheets",
        "holdout mAP@0.5",
        "champion",
        "difference",
        "decision",
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    best = current_best_model(bootstrap.datastore(), bootstrap.get_settings().BEST_MODEL_BLOB)
    if best is not None:
        score = f"{best.score:.3f}" if best.score is not None else "not recorded"
        lines.append(f"\npromoted model: {best.name} version {best.version} (mAP@0.5 {score})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=80, help="sheets per batch")
    parser.add_argument(
        "--epochs", type=int, default=15, help="epochs of the first model, from the base model (90 from noise: 0.983)"
    )
    parser.add_argument("--warm-epochs", type=int, default=20, help="epochs of the second, from the first's weights")
    parser.add_argument("--minutes", type=float, default=10, help="time cap per training run (reported if it cuts)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".demo")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    log_path = args.workdir / "demo.log"
    _log_to_file(log_path)
    started = time.perf_counter()
    try:
        return _run_demo(args, started)
    except Exception as error:  # the demo's boundary: say what failed and where to look, never a bare traceback
        logging.getLogger("demo").exception("demo failed")
        print(f"\ndemo failed after {_elapsed(started)}: {type(error).__name__}: {error}")
        print(f"the handlers' log: {log_path}")
        return 1


def _log_to_file(path: Path) -> None:
    """Handler and SDK logs go to a file; the console shows one line per stage."""
    from retrainer.logs import RedactingFilter

    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("azure").setLevel(logging.WARNING)


def _run_demo(args: argparse.Namespace, started: float) -> int:
    from devtools.azurite import running_azurite
    from devtools.local_endpoint import start_serving
    from devtools.synthetic import LABEL_MAP, SheetSpec, write_dataset_zip
    from retrainer.serving.local import free_port

    shutil.rmtree(args.workdir / "workspace", ignore_errors=True)
    arriving = LABEL_MAP[ARRIVING_CLASS].rsplit("/", 1)[-1].lower()
    print(
        f"[1/6] {_elapsed(started)}  generating two batches of {args.batch} synthetic P&ID sheets "
        f"(the {arriving} first appears in batch 2)",
        flush=True,
    )
    sets = args.workdir / "sets"
    first_batch = SheetSpec(classes=tuple(c for c in LABEL_MAP if c != ARRIVING_CLASS))
    batches = [
        write_dataset_zip(sets / f"batch{i + 1}.zip", args.batch, args.seed, spec, start=i * args.batch)
        for i, spec in enumerate((first_batch, SheetSpec()))
    ]
    with running_azurite(PROJECT_ROOT) as azurite:
        configure(args.workdir, azurite.connection_string, args.batch, args)
        from retrainer import bootstrap

        bootstrap.datastore().ensure_container()
        port = free_port()
        serve = start_serving(port, args.workdir / "serve.log")
        try:
            return _loop_and_serve(args, started, batches, serve, f"http://127.0.0.1:{port}/score")
        finally:
            serve.terminate()
            serve.wait(timeout=60)


def _loop_and_serve(
    args: argparse.Namespace, started: float, batches: list[Path], serve: subprocess.Popen[bytes], url: str
) -> int:
    """Stages 2 to 6: both batches through the function app's handlers, then the endpoint that followed them."""
    from devtools.local_endpoint import wait_until_serving
    from retrainer import bootstrap
    from retrainer.status_page import render_status_page

    functions = handlers()
    announced: set[str] = set()
    for number, zip_path in enumerate(batches, start=1):
        stage = 2 if number == 1 else 4
        summary_line = _load(zip_path)
        print(f"[{stage}/6] {_elapsed(started)}  batch {number}: {summary_line}", flush=True)
        sent = announce_images(functions["on_event"], announced)
        print(f"      {_elapsed(started)}  {sent} BlobCreated events handled by on_event", flush=True)
        prefix = "[3/6]" if number == 1 else "     "
        print(f"{prefix} {_elapsed(started)}  the timer handler submits and follows run {number}", flush=True)
        run_id = follow_until_done(functions["monitor"], started)
        record = bootstrap.ledger().runs.get(run_id)
        if record is None or record.state != RunState.COMPLETED or record.decision is None:
            state = record.state if record else "unknown"
            raise RuntimeError(f"run {run_id} ended {state}: {record.error if record else ''}")
        decision = record.decision
        print(f"      {_elapsed(started)}  {training_notes(run_id)}")
        print(
            f"      {_elapsed(started)}  version {decision.challenger_version}: holdout mAP@0.5 "
            f"{decision.challenger_score:.3f}; {decision.reason}"
        )
    champion = bootstrap.champion().record()
    if champion is None:
        raise RuntimeError("no model was promoted: nothing to serve")
    settings = bootstrap.get_settings()
    waited = wait_until_serving(
        serve,
        bootstrap.datastore(),
        settings.SERVING_STATUS_BLOB,
        champion.version,
        seconds=180,
        log=args.workdir / "serve.log",
    )
    print(
        f"[5/6] {_elapsed(started)}  the local endpoint {url} serves version {champion.version} "
        f"(it followed the champion; {waited:.0f} s after the last promotion was recorded)",
        flush=True,
    )
    picture = args.workdir / "detections.png"
    print(f"      {_elapsed(started)}  an unseen sheet sent to it: {ask_the_endpoint(url, args.seed, picture)}")
    status_path = args.workdir / "status.html"
    status_path.write_text(render_status_page(bootstrap.status_view().snapshot()), encoding="utf-8")
    last = bootstrap.ledger().runs.newest(limit=1)[0]
    report = last.decision.challenger_report if last.decision else None
    print(f"\n[6/6] {_elapsed(started)}  summary\n")
    print(summary(args.workdir))
    print(f"\nevaluation report: {report or '(none)'}")
    print(f"status page:       {status_path.as_uri()}")
    print(f"detections:        {picture.as_uri()}")
    print(f"handlers' log:     {args.workdir / 'demo.log'} (the endpoint's: {args.workdir / 'serve.log'})")
    return 0


def _load(zip_path: Path) -> str:
    """The data loader's core (no progress bars here), with the demo's datastore."""
    from retrainer import bootstrap
    from retrainer.ingestion.ingest import Layout
    from retrainer.ingestion.loader import load_archive

    settings = bootstrap.get_settings()
    layout = Layout(settings.IMAGE_FOLDER, settings.LABEL_FOLDER, settings.QUARANTINE_FOLDER)
    loaded = load_archive(
        zip_path, bootstrap.datastore(), bootstrap.ledger(), layout, settings.LABEL_MAP_BLOB, progress=False
    )
    return (
        f"{loaded.images_uploaded} images and {loaded.labels_uploaded} labels loaded, "
        f"{loaded.outcomes['converted']} converted, {len(loaded.quarantined)} quarantined"
    )


if __name__ == "__main__":
    raise SystemExit(main())
