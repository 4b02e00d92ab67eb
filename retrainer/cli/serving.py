"""`retrain serve` and `retrain endpoint`: serve the champion here, and say what serves it where."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retrainer.cli.common import Subcommands, registry_for, settings_for, show, storage_settings
from retrainer.redact import redact


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the champion on this machine until stopped, following it as it changes (one rollout tick a second)."""
    import signal
    import time

    from retrainer import bootstrap
    from retrainer.serving.local import LocalEndpoint

    settings = storage_settings(args)
    registry = registry_for(settings)
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

        settings = settings_for("azureml")
        written = write_endpoint_yaml(settings, args.output or Path("endpoint"), args.version)
        show([str(path) for path in written], args.json, lambda paths: "wrote " + ", ".join(paths))
        return 0
    from retrainer import bootstrap
    from retrainer.serving.status import read_serving_status

    settings = storage_settings(args)
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

    show(status.model_dump(mode="json"), args.json, render)
    return 0


def add_commands(commands: Subcommands, common: argparse.ArgumentParser) -> None:
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
