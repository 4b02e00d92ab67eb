"""Telemetry: the service's metrics through OpenTelemetry's in-memory reader, Azure Monitor set up lazily."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from retrainer import telemetry
from retrainer.champion.authority import ChampionAuthority
from retrainer.events import build_subject
from retrainer.ledger import Ledger
from retrainer.retraining import RetrainingService
from retrainer.settings import load_settings
from retrainer.telemetry import Metrics
from shared.records import RunState
from tests.fakes import FakeRunner, InMemoryDatastore, InMemoryTableService, first_promotion, registry_after
from tests.helpers import deliver, loaded_by_importing_function_app


def values(reader: InMemoryMetricReader) -> dict[str, float]:
    found: dict[str, float] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = 0
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint), f"{metric.name} is not a counter"
                    found[metric.name] += point.value
    return found


def test_runs_submitted_failed_promoted_and_pending_images_are_measured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in {
        "RETRAIN_MIN_NEW_IMAGES": "2",
        "RETRAIN_QUIET_MINUTES": "0",
        "RETRAIN_BACKOFF_MINUTES": "0",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", "data")
    reader = InMemoryMetricReader()
    runner = FakeRunner()
    ledger = Ledger(InMemoryTableService(), "t")
    datastore = InMemoryDatastore()
    champion = ChampionAuthority(load_settings(), registry_after(first_promotion(), tmp_path), ledger, datastore)
    service = RetrainingService(
        load_settings(),
        ledger,
        runner=lambda: runner,
        champion=lambda: champion,
        metrics=Metrics(MeterProvider([reader])),
    )
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        deliver(service, build_subject("data", f"data/images/{name}"), {"api": "PutBlob", "eTag": "1"})
    first = service.tick().submitted
    assert first is not None
    runner.finish(first, RunState.FAILED, error="quota")
    second = service.tick().submitted
    assert second is not None
    runner.finish(
        second,
        RunState.COMPLETED,
        first_promotion(),
    )
    service.tick()
    measured = values(reader)
    assert measured["retrainer.runs.submitted"] == 2
    assert measured["retrainer.runs.failed"] == 1
    assert measured["retrainer.models.promoted"] == 1
    assert measured["retrainer.images.pending"] == 0


def test_log_records_carry_the_run_id_as_a_field(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", "data")
    runner = FakeRunner()
    service = RetrainingService(
        load_settings(),
        Ledger(InMemoryTableService(), "t"),
        runner=lambda: runner,
        champion=lambda: pytest.fail("this test records no promotion"),
    )
    with caplog.at_level(logging.INFO, logger="retrainer"):
        run_id = service.submit("manual", "telemetry")
    assert [getattr(r, "run_id", None) for r in caplog.records if "submitted" in r.getMessage()] == [run_id]


def test_azure_monitor_is_set_up_once_with_entra_auth_and_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.monitor.opentelemetry as distro

    calls: list[dict] = []
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(telemetry, "_done", False)
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    assert telemetry.configure(load_settings()) is False and calls == []
    monkeypatch.setenv(
        "APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    )
    assert telemetry.configure(load_settings()) and telemetry.configure(load_settings())
    (call,) = calls
    assert call["logger_name"] == "retrainer" and call["credential"] is not None
    assert call["connection_string"].startswith("InstrumentationKey=")


def test_cold_start_loads_no_telemetry_code() -> None:
    assert loaded_by_importing_function_app(("opentelemetry", "azure.monitor.opentelemetry")) == []


def test_a_malformed_connection_string_is_logged_once_without_its_value_and_the_service_runs_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The real exporter refuses the string; that must not fail the handler that configures telemetry."""
    monkeypatch.setattr(telemetry, "_done", False)
    monkeypatch.setattr(telemetry, "_failed", None)
    secret = "InstrumentationKey=not-a-guid;IngestionEndpoint=secret-value-123"
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", secret)
    with caplog.at_level(logging.ERROR, logger="retrainer"):
        assert telemetry.configure(load_settings()) is False
        assert telemetry.configure(load_settings()) is False
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "APPLICATIONINSIGHTS_CONNECTION_STRING" in errors[0]
    assert "secret-value-123" not in caplog.text and "not-a-guid" not in caplog.text
