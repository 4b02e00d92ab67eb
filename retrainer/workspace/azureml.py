"""The Azure ML pipeline runner (azure-ai-ml SDK v2). Imported only where Azure ML is used: the SDK is heavy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient

from retrainer.settings import Settings
from shared.promotion import PROMOTION_RECORD_FILE, PromotionRecord
from shared.records import AcceptedClasses, RunState, RunStatus, run_state
from shared.registry import azureml as registry_backend
from shared.registry.azureml import AzureMLModelRegistry


class AzureMLPipelineRunner:
    """Pipeline jobs of an Azure ML workspace: the service's submit, status, cancel and list."""

    def __init__(self, client: MLClient, settings: Settings, accepted_classes: AcceptedClasses | None = None) -> None:
        self._ml_client = client
        self._settings = settings
        # The classes the service accepts (its label map): the caller, which has the datastore, reads them.
        self._accepted_classes = accepted_classes or (lambda: None)

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: Any = None, accepted_classes: AcceptedClasses | None = None
    ) -> AzureMLPipelineRunner:
        return cls(registry_backend.ml_client(settings, credential), settings, accepted_classes)

    def build_pipeline(self, label: str) -> Any:
        """The pipeline job (or its dataset-reuse variant) for the settings, validated offline."""
        from retrainer.assembly.pipeline import build_pipeline_job, component, registered_components, validate_pipeline

        registered = self._settings.PIPELINE_COMPONENTS == "registered"
        source = registered_components(self._ml_client) if registered else component
        job = build_pipeline_job(
            self._settings,
            run_label=label,
            warm_start=self.warm_start(),
            components=source,
            with_label_map=self._accepted_classes() is not None,  # the tag step names classes in its words
        )
        validate_pipeline(job)
        return job

    def warm_start(self) -> Any:
        """Whether training starts from the champion's AutoML checkpoint: auto mode, the champion's model is
        TRAINING_MODEL_NAME, and its classes are the label map's."""
        from retrainer.assembly.automl_node import champion_checkpoint

        versions = AzureMLModelRegistry(self._ml_client).model_versions(self._settings.MODEL_BASE_NAME)
        return champion_checkpoint(
            versions,
            self._accepted_classes(),
            enabled=self._settings.WARM_START,
            auto_mode=self._settings.AUTO_MODE,
            model_name=self._settings.TRAINING_MODEL_NAME,
        )

    def submit_pipeline(self, label: str) -> str:
        """Submit the pipeline job. With registered components (the default) nothing is uploaded."""
        job = self.build_pipeline(label)
        created = self._ml_client.jobs.create_or_update(job, experiment_name=self._settings.EXPERIMENT_NAME)
        return str(created.name)

    def register_components(self) -> list[str]:
        """Register the steps' environments and components under the release's version (once per release)."""
        from retrainer.assembly.graph import COMPONENT_STEPS
        from retrainer.assembly.pipeline import component, environments

        registered = []
        for environment in environments():
            env = self._ml_client.environments.create_or_update(environment)
            registered.append(f"environment {env.name}:{env.version}")
        for name in COMPONENT_STEPS:
            created = self._ml_client.components.create_or_update(component(name))
            registered.append(f"component {created.name}:{created.version}")
        return registered

    def run_status(self, run_id: str) -> RunStatus:
        job = self._ml_client.jobs.get(run_id)
        state = run_state(job.status)
        decision = self._decision(run_id) if state == RunState.COMPLETED else None
        error = None if state != RunState.FAILED else f"Azure ML job {run_id} ended as {job.status}"
        started = job.creation_context.created_at.isoformat() if job.creation_context else None
        return RunStatus(run_id, state, job.status, error, decision, started, None)

    def cancel_run(self, run_id: str) -> None:
        self._ml_client.jobs.begin_cancel(run_id).result()

    def list_runs(self, limit: int = 20) -> list[RunStatus]:
        runs = []
        for job in self._ml_client.jobs.list(parent_job_name=None):
            if job.experiment_name == self._settings.EXPERIMENT_NAME:
                runs.append(RunStatus(job.name, run_state(job.status), job.status, label=job.display_name or ""))
            if len(runs) == limit:
                break
        return runs

    def _decision(self, run_id: str) -> PromotionRecord | None:
        """The tag step's promotion record, downloaded from the finished job."""
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            self._ml_client.jobs.download(run_id, output_name="best_model_metadata", download_path=scratch)
            found = sorted(Path(scratch).rglob(PROMOTION_RECORD_FILE))
            return PromotionRecord.from_json(found[0].read_text()) if found else None
