"""`retrain models`, `promote`, `pin`, `unpin`: the registered versions, and the operator's controls of the champion."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from retrainer.cli.common import Subcommands, registry_for, settings_for, show, table
from shared.settings import SettingsError

if TYPE_CHECKING:
    from retrainer.champion.authority import ChampionAuthority, Outcome


def cmd_models(args: argparse.Namespace) -> int:
    from shared.champion.tags import REGISTERED_AT_TAG, SCORE_TAG, VAL_DATA_TAG, pin_of

    settings = settings_for(args.backend)
    versions = registry_for(settings).model_versions(args.name or settings.MODEL_BASE_NAME)
    rows = [
        {
            "version": v.version,
            "best": "yes" if v.is_best else "",
            "pinned": (pin.reason[:40] if (pin := pin_of(v)) else ""),
            "mAP@0.5": v.tags.get(SCORE_TAG, "") if v.validated else "not validated",
            "val_data": v.tags.get(VAL_DATA_TAG, ""),
            "registered": v.tags.get(REGISTERED_AT_TAG, ""),
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
        text = table(rows, ["version", "best", "pinned", "mAP@0.5", "val_data", "registered"])
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

    show(
        {
            "versions": [dataclasses.asdict(v) for v in versions],
            "history": [c.as_dict() for c in history],
            "serving": serving.model_dump(mode="json") if serving is not None else None,
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

    settings = settings_for(args.backend)
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
    show(outcome.as_dict(), args.json, lambda _: outcome.message)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    return _champion_command(args, lambda controls: controls.promote(args.version, args.reason, _actor(), args.force))


def cmd_pin(args: argparse.Namespace) -> int:
    return _champion_command(args, lambda controls: controls.pin(args.reason, _actor()))


def cmd_unpin(args: argparse.Namespace) -> int:
    return _champion_command(args, lambda controls: controls.unpin(_actor(), args.reason or ""))


def add_commands(commands: Subcommands, common: argparse.ArgumentParser) -> None:
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
