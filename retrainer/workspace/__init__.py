"""Where the service starts and follows retraining runs: the `PipelineRunner` port and its two backends.

- `azureml`: pipeline jobs of an Azure ML workspace (azure-ai-ml, imported lazily: the SDK is heavy).
- `local`: detached processes over folders on this machine (`local_runner` runs the steps), so the rest of the
  service runs and is tested locally.

The model registry both runners' steps write to is `shared.registry`.
"""

from __future__ import annotations

from typing import Protocol

from retrainer.settings import Settings
from shared.records import AcceptedClasses, RunStatus

__all__ = ["PipelineRunner", "open_runner"]


class PipelineRunner(Protocol):
    """Where retraining runs are started and followed."""

    def submit_pipeline(self, label: str) -> str:
        """Start the retraining pipeline; returns at once with the run id."""
        ...

    def run_status(self, run_id: str) -> RunStatus:
        """Where the run is; a run whose process died reads as failed, never as running forever."""
        ...

    def cancel_run(self, run_id: str) -> None: ...

    def list_runs(self, limit: int = 20) -> list[RunStatus]:
        """The most recent runs, newest first."""
        ...


def open_runner(settings: Settings, accepted_classes: AcceptedClasses | None = None) -> PipelineRunner:
    """The pipeline runner the settings point at (WORKSPACE_BACKEND, or azureml when its variables are set).

    `accepted_classes` lets the Azure ML runner check that the champion's classes are the service's before
    it trains from the champion's checkpoint; without it the check finds no label map and trains afresh.
    """
    if settings.backend() == "azureml":
        from retrainer.workspace.azureml import AzureMLPipelineRunner

        return AzureMLPipelineRunner.from_settings(settings, accepted_classes=accepted_classes)
    from retrainer.workspace.local import LocalPipelineRunner

    return LocalPipelineRunner(settings.LOCAL_WORKSPACE_DIR)
