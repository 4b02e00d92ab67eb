"""`retrain`: start and follow retraining runs, and list models, on Azure ML or locally.

    retrain submit [--backend azureml|local] [--reason TEXT] [--dry-run --output job.yml]
    retrain register-components      (Azure ML, once per release: what submissions then reference)
    retrain status RUN_ID
    retrain cancel RUN_ID
    retrain runs
    retrain models                   (versions, which is best and pinned, and the champion's latest changes)
    retrain promote VERSION --reason TEXT [--force]   (by hand; a rollback when it was best before)
    retrain pin --reason TEXT        (the champion stays; runs still train and compare)
    retrain unpin [--reason TEXT]
    retrain serve [--port N]         (serve the champion here over HTTP, following it as it changes)
    retrain endpoint [--json] [--dry-run --output DIR]   (which version serves; the Azure ML endpoint's YAML)
    retrain migrate-ledger           (rows of the ledger's first layout: the service moves them once by itself)
    retrain split reset --reason TEXT [--force]   (a damaged split assignment: start a fresh version)

The backend defaults to azureml when AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and
AZUREML_WORKSPACE_NAME are set, else local. `--json` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer.promotion import ClassGuard
from retrainer.records import RunState, json_document
from retrainer.redact import redact
from retrainer.settings import Settings, SettingsError, load_settings
from retrainer.workspace import ModelRegistry, PipelineRunner, open_registry, open_runner

if TYPE_CHECKING:
    from retrainer.champion.authority import ChampionAuthority, Outcome


def _settings(backend: str | None) -> Settings:
    return load_settings(WORKSPACE_BACKEND=backend) if backend else load_settings()


def _runner(settings: Settings) -> PipelineRunner:
    if settings.backend() == "azureml" and settings.storage_configured():
        from retrainer import bootstrap  # the label map's classes, for warm start's check

        return bootstrap.runner_for(settings)
    return open_runner(settings)


def _registry(settings: Settings) -> ModelRegistry:
    return open_registry(settings)


def _print(value: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        print(json_document(value, indent=2))
    else:
        print(render(value))


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r.get(c, "") or "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "") or "").ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings(args.backend)
    if args.dry_run:
        if settings.backend() != "azureml":
            raise SettingsError("--dry-run builds the Azure ML pipeline: use --backend azureml")
        from pipeline_steps.pipeline import (
            build_pipeline_job,
            step_environments,
            validate_pipeline,
            write_pipeline_yaml,
        )

        job = build_pipeline_job(settings, run_label=args.reason or "dry-run")
        validate_pipeline(job)
        output = args.output or Path("pipeline_job.yml")
        write_pipeline_yaml(job, output, registered=settings.PIPELINE_COMPONENTS == "registered")
        steps, environments = list(job.jobs), step_environments(job)
        _print(
            {"dry_run": True, "output": str(output), "steps": steps, "environments": environments},
            args.json,
            lambda v: (
                f"validated a {len(steps)}-step pipeline ({', '.join(steps)}); wrote {v['output']}; "
                f"environments: {', '.join(f'{s} on {e}' for s, e in environments.items())}; nothing was submitted"
            ),
        )
        return 0
    reason = args.reason or "manual (retrain submit)"
    if args.bypass_service or not settings.storage_configured():
        # Expert path: the run is started directly, recorded nowhere, holds no slot and binds no images.
        run_id = _runner(settings).submit_pipeline(reason)
        through = "directly, bypassing the service"
    else:
        from retrainer import bootstrap
        from retrainer.ledger.slot import SlotTaken
        from retrainer.submission import SubmissionConflict

        try:
            run_id = bootstrap.service_for(settings).submit("manual", reason, force=args.force)
        except SlotTaken as taken:
            print(f"not submitted: {taken} (wait for it, or use --force)", file=sys.stderr)
            return 2
        except SubmissionConflict as conflict:
            print(f"not submitted: {conflict}", file=sys.stderr)
            return 2
        through = "through the service: recorded, holding a slot, with the pending images"
    _print(
        {"run_id": run_id, "backend": settings.backend(), "through": through},
        args.json,
        lambda v: f"submitted {v['run_id']} ({v['backend']}, {v['through']}); follow it: retrain status {v['run_id']}",
    )
    return 0


def cmd_register_components(args: argparse.Namespace) -> int:
    from retrainer.workspace.azureml import AzureMLPipelineRunner

    settings = _settings("azureml")
    registered = AzureMLPipelineRunner.from_settings(settings).register_components()
    _print(registered, args.json, lambda rows: "registered " + "; ".join(rows))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _runner(_settings(args.backend)).run_status(args.run_id)
    document = {**dataclasses.asdict(status), "decision": status.decision.model_dump() if status.decision else None}

    def render(value: dict[str, Any]) -> str:
        lines = [f"run {value['run_id']}: {value['state']}" + (f" ({value['detail']})" if value["detail"] else "")]
        if value["error"]:
            lines.append(f"error: {value['error']}")
        if status.decision:
            decision = status.decision
            lines.append(f"decision: best version {decision.best_version}: {decision.reason}")
            lines.append(f"compared: {decision.comparison.describe()}")
            if decision.comparison.class_guard is not None:
                lines += _guard_lines(decision.comparison.class_guard)
        return "\n".join(lines)

    _print(document, args.json, render)
    return 1 if status.state == RunState.FAILED else 0


def _guard_lines(guard: ClassGuard) -> list[str]:
    """The per-class guard: what it watched, each watched class's change (the worst first), which fell."""
    watched = [c for c in guard.classes if c.instances >= guard.min_instances]
    fallen = guard.regressions()
    verdict = "fell: " + ", ".join(c.label() for c in fallen) if fallen else "none fell"
    lines = [
        f"class guard: {len(watched)} of {len(guard.classes)} classes watched (at least {guard.min_instances} "
        f"symbols on the holdout), each may lose at most {guard.max_drop:g} AP@0.5 beyond doubt "
        f"({guard.confidence:.1%} intervals): {verdict}"
    ]
    for c in sorted(watched, key=lambda c: (c.challenger_ap - c.champion_ap, c.class_id)):
        mark = "  FELL" if c in fallen else ""
        lines.append(
            f"  {c.label()} ({c.instances}): {c.champion_ap:.2f} -> {c.challenger_ap:.2f}, {c.interval.words()}{mark}"
        )
    return lines


def cmd_cancel(args: argparse.Namespace) -> int:
    runner = _runner(_settings(args.backend))
    runner.cancel_run(args.run_id)
    status = runner.run_status(args.run_id)
    document = {"run_id": args.run_id, "state": status.state.value}
    _print(document, args.json, lambda v: f"run {v['run_id']}: {v['state']}")
    return 0 if status.finished else 1


def cmd_runs(args: argparse.Namespace) -> int:
    runs = [dataclasses.asdict(run) for run in _runner(_settings(args.backend)).list_runs(args.limit)]
    _print(runs, args.json, lambda rows: _table(rows, ["run_id", "state", "detail", "started", "ended"]))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from retrainer.champion.tags import SCORE_TAG, pin_of

    settings = _settings(args.backend)
    versions = _registry(settings).model_versions(args.name or settings.MODEL_BASE_NAME)
    rows = [
        {
            "version": v.version,
            "best": "yes" if v.is_best else "",
            "pinned": (pin.reason[:40] if (pin := pin_of(v)) else ""),
            "mAP@0.5": v.tags.get(SCORE_TAG, ""),
            "val_data": v.tags.get("val_data", ""),
            "registered": v.tags.get("registered_at", ""),
        }
        for v in versions
    ]
    history, serving = [], None
    if settings.storage_configured():  # the history is in the ledger, what serves the champion in the datastore
        from retrainer import bootstrap
        from retrainer.serving.status import read_serving_status

        history = bootstrap.ledger().champion.latest(args.history)
        serving = read_serving_status(bootstrap.datastore(), settings.SERVING_STATUS_BLOB)

    def render(_: object) -> str:
        text = _table(rows, ["version", "best", "pinned", "mAP@0.5", "val_data", "registered"])
        if serving is not None:
            answers = f"version {serving.version} answers requests" if serving.version else "no version answers yet"
            text += f"\n\nserving: {answers} ({serving.backend} endpoint {serving.endpoint}); "
            text += f"{serving.state}: {serving.message}"
        if history:
            text += "\n\nlatest changes of the champion, newest first:\n" + "\n".join(
                f"{c.at:%Y-%m-%d %H:%M}  {c.id}  {c.words()}: {c.reason}"
                + (f" (undoes {c.undoes})" if c.undoes else "")
                for c in history
            )
        return text

    _print(
        {
            "versions": [dataclasses.asdict(v) for v in versions],
            "history": [c.as_dict() for c in history],
            "serving": serving.as_dict() if serving is not None else None,
        },
        args.json,
        render,
    )
    return 0


def _actor() -> str:
    """Who the history names for a change made with this command."""
    try:
        return f"{getpass.getuser()} (retrain)"
    except (OSError, KeyError):  # no user name in this environment
        return "operator (retrain)"


def _champion_command(args: argparse.Namespace, call: Callable[[ChampionAuthority], Outcome]) -> int:
    """Run one of the operator's controls; a refusal is one line on stderr and exit 2."""
    from retrainer import bootstrap
    from retrainer.champion.authority import ChampionError

    settings = _settings(args.backend)
    if not settings.storage_configured():
        raise SettingsError(
            "needs the datastore (STORAGE_ACCOUNT_CONNECTION_STRING or DATASTORE_BLOB_SERVICE_URI): the best-model "
            "record and the champion's history live there"
        )
    try:
        outcome = call(bootstrap.champion(settings))
    except ChampionError as refused:
        print(f"retrain {args.command}: {refused}", file=sys.stderr)
        return 2
    _print(outcome.as_dict(), args.json, lambda _: outcome.message)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    return _champion_command(args, lambda controls: controls.promote(args.version, args.reason, _actor(), args.force))


def cmd_pin(args: argparse.Namespace) -> int:
    return _champion_command(args, lambda controls: controls.pin(args.reason, _actor()))


def cmd_unpin(args: argparse.Namespace) -> int:
    return _champion_command(args, lambda controls: controls.unpin(_actor(), args.reason or ""))


def _storage_settings(args: argparse.Namespace) -> Settings:
    settings = _settings(args.backend)
    if not settings.storage_configured():
        raise SettingsError(
            "needs the datastore (STORAGE_ACCOUNT_CONNECTION_STRING or DATASTORE_BLOB_SERVICE_URI): the champion's "
            "record, the holdout sheets of the smoke test and the serving status live there"
        )
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the champion on this machine until stopped, following it as it changes (one rollout tick a second)."""
    import signal
    import time

    from retrainer import bootstrap
    from retrainer.serving.local import LocalEndpoint

    settings = _storage_settings(args)
    registry = _registry(settings)
    root = settings.LOCAL_WORKSPACE_DIR.resolve() / "serving"
    endpoint = LocalEndpoint(
        settings.SERVING_ENDPOINT_NAME or "local",
        args.port,
        settings.LOCAL_SERVING_ENVIRONMENT.resolve(),
        root,
        fetch=lambda version: registry.local_model_path(version, root / "models" / version.version),
    )
    rollout = bootstrap.serving_rollout(settings, endpoint)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    endpoint.start()
    print(
        f"retrain serve: the endpoint is {endpoint.url} (POST /score, GET / for liveness); Ctrl-C stops it", flush=True
    )
    said = ""
    try:
        while True:
            try:
                status = rollout.tick()
            except Exception as error:  # the loop's boundary: storage or the registry failed; the next tick retries
                status = None
                print(f"retrain serve: {redact(str(error))[:300]}; trying again", file=sys.stderr, flush=True)
            if status is not None and status.message != said:
                said = status.message
                print(f"retrain serve: [{status.state}] {status.message}", flush=True)
            time.sleep(args.interval)
    finally:
        endpoint.close()


def cmd_endpoint(args: argparse.Namespace) -> int:
    """What serves the champion (the serving status), or the Azure ML endpoint's YAML with --dry-run."""
    if args.dry_run:
        from retrainer.serving.azureml import write_endpoint_yaml

        settings = _settings("azureml")
        written = write_endpoint_yaml(settings, args.output or Path("endpoint"), args.version)
        _print([str(path) for path in written], args.json, lambda paths: "wrote " + ", ".join(paths))
        return 0
    from retrainer import bootstrap
    from retrainer.serving.status import read_serving_status

    settings = _storage_settings(args)
    status = read_serving_status(bootstrap.datastore(), settings.SERVING_STATUS_BLOB)
    if status is None:
        print(
            "retrain endpoint: nothing serves the champion yet (retrain serve, or SERVING_ENDPOINT_NAME on Azure ML)",
            file=sys.stderr,
        )
        return 1

    def render(value: dict) -> str:
        serving = f"version {value['version']} since {value['since']}" if value["version"] else "no version yet"
        where = value["url"] or "(being created)"
        return f"{value['backend']} endpoint {where}: {serving}; {value['state']}: {status.message}"

    _print(status.as_dict(), args.json, render)
    return 0


def cmd_migrate_ledger(args: argparse.Namespace) -> int:
    """Move the rows of the ledger's first layout into the current one, whatever the layout marker says."""
    from retrainer import bootstrap
    from retrainer.ledger_migration import migrate_and_mark

    migration = migrate_and_mark(bootstrap.ledger())
    _print(
        dataclasses.asdict(migration),
        args.json,
        lambda v: (
            f"moved {v['retired']} rows of the ledger's first layout into the current one"
            + (f"; {v['left']} cannot be read and stay (each is logged)" if v["left"] else "")
        ),
    )
    return 1 if migration.left else 0


def cmd_split_reset(args: argparse.Namespace) -> int:
    """Store a fresh, empty split assignment that records why; the next run draws every side anew."""
    from pipeline_steps.split_assignment import RestartRefused, restart_assignment

    settings = _settings(args.backend)
    name = args.name or settings.SPLIT_ASSIGNMENT_NAME
    try:
        restart = restart_assignment(_registry(settings), name, args.reason, force=args.force)
    except RestartRefused as refused:
        print(f"retrain split reset: {refused}", file=sys.stderr)
        return 2
    version = restart.replaces_version + 1
    _print(
        {"name": name, "version": version, **restart.model_dump()},
        args.json,
        lambda v: (
            f"started split assignment {v['name']} version {v['version']} (empty), replacing version "
            f"{v['replaces_version']}, which was {v['replaced']}: the next run draws every side anew, so the "
            "holdout changes and the next promotion is compared on the new one"
        ),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=["azureml", "local"], help="default: azureml when configured, else local")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", parents=[common], help="start a retraining run")
    submit.add_argument("--reason", help="why this run (recorded with it)")
    submit.add_argument(
        "--dry-run", action="store_true", help="build and validate the Azure ML pipeline; submit nothing"
    )
    submit.add_argument("--output", type=Path, help="with --dry-run: where the pipeline job YAML goes")
    submit.add_argument("--force", action="store_true", help="start even when a run holds the slot (bounded)")
    submit.add_argument(
        "--bypass-service",
        action="store_true",
        help="expert: start the pipeline directly; the run is not recorded, holds no slot and its promotion is "
        "not recorded as the best model",
    )
    submit.set_defaults(handler=cmd_submit)
    register = commands.add_parser(
        "register-components",
        parents=[common],
        help="register the steps' environment and components for this release (once per release, on deployment)",
    )
    register.set_defaults(handler=cmd_register_components)
    status = commands.add_parser("status", parents=[common], help="state, step, error and decision of a run")
    status.add_argument("run_id")
    status.set_defaults(handler=cmd_status)
    cancel = commands.add_parser("cancel", parents=[common], help="stop a run (the service returns its images)")
    cancel.add_argument("run_id")
    cancel.set_defaults(handler=cmd_cancel)
    runs = commands.add_parser("runs", parents=[common], help="recent runs, newest first")
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(handler=cmd_runs)
    models = commands.add_parser("models", parents=[common], help="registered versions and which is best")
    models.add_argument("--name", help="model name (default MODEL_BASE_NAME)")
    models.add_argument("--history", type=int, default=10, help="how many of the champion's latest changes")
    models.set_defaults(handler=cmd_models)
    promote = commands.add_parser(
        "promote",
        parents=[common],
        help="make a version the champion by hand (a rollback when it was best before): moves the best tag, "
        "writes the best-model record and the history, publishes ModelPromoted",
    )
    promote.add_argument("version")
    promote.add_argument("--reason", required=True, help="why (recorded in the history and the record)")
    promote.add_argument(
        "--force", action="store_true", help="promote a version trained on a class map the service no longer uses"
    )
    promote.set_defaults(handler=cmd_promote)
    pin = commands.add_parser(
        "pin", parents=[common], help="pin the champion: runs still train and compare, and the champion stays"
    )
    pin.add_argument("--reason", required=True, help="why (shown on the status page and in every run's decision)")
    pin.set_defaults(handler=cmd_pin)
    unpin = commands.add_parser("unpin", parents=[common], help="take the pin off: runs decide again")
    unpin.add_argument("--reason", help="why (recorded in the history)")
    unpin.set_defaults(handler=cmd_unpin)
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the champion over HTTP on this machine (POST /score), following it as it changes",
    )
    serve.add_argument("--port", type=int, default=5050, help="the endpoint's port (default 5050)")
    serve.add_argument("--interval", type=float, default=1.0, help="seconds between two looks at the champion")
    serve.set_defaults(handler=cmd_serve)
    endpoint = commands.add_parser(
        "endpoint", parents=[common], help="which version serves, where, since when (--dry-run: the Azure ML YAML)"
    )
    endpoint.add_argument(
        "--dry-run", action="store_true", help="write the Azure ML endpoint and deployment YAML; deploy nothing"
    )
    endpoint.add_argument("--output", type=Path, help="with --dry-run: the folder the YAML goes to")
    endpoint.add_argument("--version", default="1", help="with --dry-run: the model version the deployment serves")
    endpoint.set_defaults(handler=cmd_endpoint)
    migrate = commands.add_parser(
        "migrate-ledger",
        help="move rows of the ledger's first layout into the current one (the service does it once by itself; "
        "safe to repeat and to run beside it)",
    )
    migrate.add_argument("--json", action="store_true", help="machine-readable output")
    migrate.set_defaults(handler=cmd_migrate_ledger)
    split = commands.add_parser("split", help="the split assignment that keeps every image's side")
    split_commands = split.add_subparsers(dest="split_command", required=True)
    reset = split_commands.add_parser(
        "reset",
        parents=[common],
        help="start a fresh, empty version of the split assignment (the repair for a damaged one); the next run "
        "draws every side anew",
    )
    reset.add_argument("--reason", required=True, help="why (recorded in the new version)")
    reset.add_argument("--name", help="the assignment document (default SPLIT_ASSIGNMENT_NAME)")
    reset.add_argument(
        "--force", action="store_true", help="restart even a readable assignment (its holdout is then drawn anew)"
    )
    reset.set_defaults(handler=cmd_split_reset)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (SettingsError, KeyError, ValueError, FileNotFoundError) as error:
        print(f"retrain {args.command}: {redact(str(error))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
