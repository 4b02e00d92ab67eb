"""Timer trigger: follows submitted runs to their end, promotes, and submits batches that became due; then, when
SERVING_ENDPOINT_NAME is set, takes one step of the Azure ML endpoint's rollout towards the champion."""

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
    failures = [str(failure) for failure in outcome.failures]
    serving_failure = _serve_the_champion()
    if serving_failure:
        failures.append(serving_failure)
    if failures:
        # Raised after the whole tick ran (each failure is logged where it happened), so the host records
        # this invocation as failed and alerts on failed executions see it.
        raise RuntimeError(
            f"monitor: {len(failures)} part(s) of the tick failed, the rest was done: " + "; ".join(failures)
        )


def _serve_the_champion() -> str | None:
    """One step of the endpoint's rollout, after the runs were followed; returns what failed (logged), never raises:
    the next tick tries again. A deployment or smoke test that fails is not an error here: the rollout says so in
    the serving status and a ServingFailed event, and retries after its back-off."""
    from retrainer import bootstrap
    from retrainer.redact import describe_error

    try:
        rollout = bootstrap.serving()
        if rollout is None:
            return None
        status = rollout.tick()
    except Exception as error:  # the tick's boundary: Azure ML or storage failed; the runs were followed already
        failure = f"serving: {describe_error(error)}"
        log.error("monitor: %s", failure)
        return failure
    log.info("monitor: serving [%s] %s", status.state, status.message)
    return None
