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
import sys

from retrainer.cli import champion, maintenance, runs, serving
from retrainer.redact import redact
from shared.settings import SettingsError

#: The command modules, in the order `retrain --help` lists their commands.
COMMAND_MODULES = (runs, champion, serving, maintenance)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=["azureml", "local"], help="default: azureml when configured, else local")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (SettingsError, KeyError, ValueError, FileNotFoundError) as error:
        print(f"retrain {args.command}: {redact(str(error))}", file=sys.stderr)
        return 2
