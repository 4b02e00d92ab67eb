"""`retrain submit`, `register-components`, `status`, `cancel`, `runs`: start and follow retraining runs."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from retrainer.cli.common import Subcommands, runner_for, settings_for, show, table
from shared.promotion import ClassGuard
from shared.records import RunState
from shared.settings import SettingsError


def cmd_submit(args: argparse.Namespace) -> int:
    settings = settings_for(args.backend)
    if args.dry_run:
        if settings.backend() != "azureml":
            raise SettingsError("--dry-run builds the Azure ML pipeline: use --backend azureml")
        from retrainer.assembly.pipeline import (
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
        show(
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
        run_id = runner_for(settings).submit_pipeline(reason)
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
    show(
        {"run_id": run_id, "backend": settings.backend(), "through": through},
        args.json,
        lambda v: f"submitted {v['run_id']} ({v['backend']}, {v['through']}); follow it: retrain status {v['run_id']}",
    )
    return 0


def cmd_register_components(args: argparse.Namespace) -> int:
    from retrainer.workspace.azureml import AzureMLPipelineRunner

    settings = settings_for("azureml")
    registered = AzureMLPipelineRunner.from_settings(settings).register_components()
    show(registered, args.json, lambda rows: "registered " + "; ".join(rows))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = runner_for(settings_for(args.backend)).run_status(args.run_id)
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

    show(document, args.json, render)
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
    runner = runner_for(settings_for(args.backend))
    runner.cancel_run(args.run_id)
    status = runner.run_status(args.run_id)
    document = {"run_id": args.run_id, "state": status.state.value}
    show(document, args.json, lambda v: f"run {v['run_id']}: {v['state']}")
    return 0 if status.finished else 1


def cmd_runs(args: argparse.Namespace) -> int:
    runs = [dataclasses.asdict(run) for run in runner_for(settings_for(args.backend)).list_runs(args.limit)]
    show(runs, args.json, lambda rows: table(rows, ["run_id", "state", "detail", "started", "ended"]))
    return 0


def add_commands(commands: Subcommands, common: argparse.ArgumentParser) -> None:
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
