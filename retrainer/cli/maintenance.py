"""`retrain migrate-ledger` and `retrain split reset`: repairs an operator runs by hand, rarely."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from retrainer.cli.common import Subcommands, registry_for, settings_for, show


def cmd_migrate_ledger(args: argparse.Namespace) -> int:
    """Move the rows of the ledger's first layout into the current one, whatever the layout marker says."""
    from retrainer.ledger import Ledger
    from retrainer.ledger_migration import migrate_and_mark
    from retrainer.settings import get_settings

    # Not bootstrap.ledger(): it migrates an unmarked ledger itself, and this command would then report nothing.
    ledger = Ledger.from_settings(get_settings())
    ledger.ensure_tables()
    migration = migrate_and_mark(ledger)
    show(
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
    from shared.split_assignment import RestartRefused, restart_assignment

    settings = settings_for(args.backend)
    name = args.name or settings.SPLIT_ASSIGNMENT_NAME
    try:
        restart = restart_assignment(registry_for(settings), name, args.reason, force=args.force)
    except RestartRefused as refused:
        print(f"retrain split reset: {refused}", file=sys.stderr)
        return 2
    version = restart.replaces_version + 1
    show(
        {"name": name, "version": version, **restart.model_dump()},
        args.json,
        lambda v: (
            f"started split assignment {v['name']} version {v['version']} (empty), replacing version "
            f"{v['replaces_version']}, which was {v['replaced']}: the next run draws every side anew, so the "
            "holdout changes and the next promotion is compared on the new one"
        ),
    )
    return 0


def add_commands(commands: Subcommands, common: argparse.ArgumentParser) -> None:
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
