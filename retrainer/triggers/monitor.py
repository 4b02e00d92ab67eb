"""Timer trigger: follows submitted runs to their end, promotes, and submits batches that became due."""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("monitor")
@bp.timer_trigger(arg_name="timer", schedule="%MONITOR_SCHEDULE%", run_on_startup=False)
def monitor(timer: func.TimerRequest) -> None:
    from retrainer import service

    outcome = service.retraining().tick()
    if outcome["paused"]:
        log.warning("auto-submission: %s", outcome["paused"])
    log.info("monitor: followed %s, submitted %s", outcome["followed"], outcome["submitted"])
