"""What every `retrain` command shares: its settings and backends, and how it prints (text or --json)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from retrainer.settings import Settings, load_settings
from retrainer.workspace import PipelineRunner, open_runner
from shared.records import json_document
from shared.registry import ModelRegistry, open_registry
from shared.settings import SettingsError

#: The subcommands' registry that each command module adds its parsers to.
Subcommands = argparse._SubParsersAction


def settings_for(backend: str | None) -> Settings:
    return load_settings(WORKSPACE_BACKEND=backend) if backend else load_settings()


def runner_for(settings: Settings) -> PipelineRunner:
    if settings.backend() == "azureml" and settings.storage_configured():
        from retrainer import bootstrap  # the label map's classes, for warm start's check

        return bootstrap.runner_for(settings)
    return open_runner(settings)


def registry_for(settings: Settings) -> ModelRegistry:
    return open_registry(settings)


def show(value: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        print(json_document(value, indent=2))
    else:
        print(render(value))


def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r.get(c, "") or "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "") or "").ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def storage_settings(args: argparse.Namespace) -> Settings:
    settings = settings_for(args.backend)
    if not settings.storage_configured():
        raise SettingsError(
            "needs the datastore (STORAGE_ACCOUNT_CONNECTION_STRING or DATASTORE_BLOB_SERVICE_URI): the champion's "
            "record, the holdout sheets of the smoke test and the serving status live there"
        )
    return settings
