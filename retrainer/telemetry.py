"""Telemetry: the service's few metrics, and Azure Monitor when the app has Application Insights.

Metrics go through the OpenTelemetry API, which records nothing until a provider is configured: in
Azure, `configure_azure_monitor` (Entra authentication, no key) when APPLICATIONINSIGHTS_CONNECTION_STRING
is set, loaded on the first invocation rather than at import so cold start stays that of
`azure.functions`; in tests, a provider with in-memory readers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from retrainer.settings import Settings

log = logging.getLogger(__name__)

_configured = threading.Lock()
_done = False
#: Why telemetry is off for this process, once configuring it failed (so it is tried and logged once).
_failed: str | None = None


class Metrics:
    """The service's instruments: runs submitted, failed and promoted, and images waiting for a run."""

    def __init__(self, meter_provider: Any = None) -> None:
        from opentelemetry import metrics

        meter = (meter_provider or metrics.get_meter_provider()).get_meter("retrainer")
        self.runs_submitted = meter.create_counter("retrainer.runs.submitted", description="Runs submitted")
        self.runs_failed = meter.create_counter("retrainer.runs.failed", description="Runs that failed")
        self.models_promoted = meter.create_counter("retrainer.models.promoted", description="Best-model changes")
        self.pending_images = meter.create_gauge("retrainer.images.pending", description="Images waiting for a run")


def configure(settings: Settings) -> bool:
    """Send logs, traces and metrics to Application Insights once per process; False when not configured.

    Telemetry never takes the service down: a setting the exporter refuses is logged once, naming the
    variable and never its value, and the process runs without telemetry.
    """
    global _done, _failed
    connection = settings.APPLICATIONINSIGHTS_CONNECTION_STRING
    if not connection:
        return False
    with _configured:
        if _done or _failed:
            return _done
        from azure.monitor.opentelemetry import configure_azure_monitor

        from shared.identity import azure_credential

        try:
            configure_azure_monitor(
                connection_string=connection,
                credential=azure_credential(),
                logger_name="retrainer",
                enable_live_metrics=False,
            )
        except Exception as error:  # the exporter's validation: any refusal means no telemetry, not no service
            _failed = type(error).__name__
            log.error(
                "APPLICATIONINSIGHTS_CONNECTION_STRING is not a valid Application Insights connection string "
                "(%s); the service runs without telemetry",
                _failed,
            )
            return False
        _done = True
    log.info("telemetry goes to Application Insights")
    return True
