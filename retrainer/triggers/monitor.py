"""Timer trigger: follows submitted runs to their end, promotes, and submits batches that became due."""

from __future__ import annotations

import logging

import azure.functions as func

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("monitor")
@bp.timer_trigger(arg_name="timer", schedule="%MONITOR_SCHEDULE%", run_on_startup=False)
def monitor(timer: func.TimerRequest) -> None:
    from retrainer import bootstrap

    outcome = bootstrap.retraining().tick()
    if outcome.paused_reason:
        log.warning("auto-submission: %s", outcome.paused_reason)
    followed = {run_id: str(state) for run_id, state in outcome.followed.items()}
    log.info("monitor: followed %s, submitted %s", followed, outcome.submitted)
    if outcome.failures:
        # Raised after the whole tick ran (each failure is logged where it happened), so the host records
        # this invocation as failed and alerts on failed executions see it.
        raise RuntimeError(
            f"monitor: {len(outcome.failures)} part(s) of the tick failed, the rest was done: "
            + "; ".join(str(failure) for failure in outcome.failures)
        )
