"""The Azure ML backend of serving: a managed online endpoint, one deployment per model version.

The endpoint is keyless (`auth_mode: aad_token`: callers sign in with Entra ID and need the score action on it).
Each deployment is a no-code deployment of the registered MLflow model (`model: azureml:<name>:<version>`, no
environment and no scoring script: Azure ML builds the serving image from the model's own requirements and serves
it with its inference server, as Microsoft's AutoML object detection sample deploys its model), with Application
Insights on. Every call returns once Azure ML accepted the request: creating, updating and deleting go on there,
and `view` reads where they are on a later tick (the function that drives the rollout never waits for them).

Imported only where Azure ML serves: the SDK is heavy.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.entities import (
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    OnlineDeployment,
    OnlineRequestSettings,
    ProbeSettings,
)
from azure.core.exceptions import AzureError, ResourceNotFoundError

from retrainer.serving.endpoint import Deployment, DeploymentState, EndpointView, ScoringFailed, deployment_name
from retrainer.settings import Settings
from shared.records import ModelVersion

ENDPOINT_SCHEMA = "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json"
DEPLOYMENT_SCHEMA = "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json"

#: A whole P&ID sheet on a CPU instance takes seconds to tens of seconds; 180 s is the most a managed online
#: endpoint allows (Azure ML's "Manage resources and quotas": max request time-out at endpoint level).
REQUEST_TIMEOUT_MS = 180_000
#: The probes of Microsoft's AutoML object detection deployment (tutorial-auto-train-image-models, the fridge
#: items sample): the image models load slowly, so the first probe comes late and liveness tolerates 30 misses.
LIVENESS_PROBE = ProbeSettings(failure_threshold=30, success_threshold=1, timeout=2, period=10, initial_delay=2000)
READINESS_PROBE = ProbeSettings(failure_threshold=10, success_threshold=1, timeout=10, period=10, initial_delay=2000)

#: Provisioning states of a deployment (Azure ML's DeploymentProvisioningState), as the rollout sees them.
_DEPLOYMENT_STATES = {
    "creating": DeploymentState.CREATING,
    "updating": DeploymentState.CREATING,
    "scaling": DeploymentState.CREATING,
    "succeeded": DeploymentState.READY,
    "failed": DeploymentState.FAILED,
    "canceled": DeploymentState.FAILED,
    "deleting": DeploymentState.DELETING,
}
#: Why an endpoint takes no change now, by its provisioning state (Succeeded: it does).
_ENDPOINT_STATES = {
    "succeeded": "",
    "creating": "being created",
    "updating": "updating (a traffic change)",
    "deleting": "being deleted",
    "failed": "its provisioning failed (asked again)",
    "canceled": "its provisioning was canceled (asked again)",
}
#: A model reference ends with its version: `azureml:<name>:<version>` as sent, `.../models/<name>/versions/<v>`
#: as Azure ML answers.
_MODEL_VERSION = re.compile(r"(?:/versions/|^azureml:[^:]+:)([^/:]+)$")


def endpoint_entity(name: str) -> ManagedOnlineEndpoint:
    """The endpoint: keyless (callers sign in with Entra ID), its identity system-assigned (Azure ML grants it
    AcrPull and Storage Blob Data Reader on the workspace's registry and storage by itself)."""
    return ManagedOnlineEndpoint(
        name=name,
        auth_mode="aad_token",
        description="Serves the champion of the P&ID symbol detector; the retraining service moves its traffic.",
        tags={"managed-by": "pid-symbol-retraining"},
    )


def deployment_entity(
    settings: Settings, endpoint: str, name: str, model: str, version: str
) -> ManagedOnlineDeployment:
    """A no-code deployment of the registered MLflow model `model`:`version` on SERVING_INSTANCE_TYPE."""
    return ManagedOnlineDeployment(
        name=name,
        endpoint_name=endpoint,
        model=f"azureml:{model}:{version}",
        instance_type=settings.SERVING_INSTANCE_TYPE,
        instance_count=settings.SERVING_INSTANCE_COUNT,
        app_insights_enabled=True,
        request_settings=OnlineRequestSettings(
            request_timeout_ms=REQUEST_TIMEOUT_MS, max_concurrent_requests_per_instance=1
        ),
        liveness_probe=LIVENESS_PROBE,
        readiness_probe=READINESS_PROBE,
        tags={"model": model, "model_version": version},
    )


def _state_name(value: object) -> str:
    """A provisioning state as lower-case text (the SDK answers an enum member or a string)."""
    return str(getattr(value, "value", value) or "").lower()


class AzureMLEndpoint:
    """A managed online endpoint of the workspace (SERVING_ENDPOINT_NAME), its deployments and their traffic."""

    backend = "azureml"

    def __init__(self, client: MLClient, settings: Settings) -> None:
        if not settings.SERVING_ENDPOINT_NAME:
            raise ValueError("SERVING_ENDPOINT_NAME is not set: serving on Azure ML is off")
        self.name = settings.SERVING_ENDPOINT_NAME
        self._client = client
        self._settings = settings

    @classmethod
    def from_settings(cls, settings: Settings, credential: Any = None) -> AzureMLEndpoint:
        from shared.registry import azureml as registry_backend

        return cls(registry_backend.ml_client(settings, credential), settings)

    def view(self) -> EndpointView:
        try:
            endpoint = self._client.online_endpoints.get(self.name)
        except ResourceNotFoundError:
            self._client.online_endpoints.begin_create_or_update(endpoint_entity(self.name))
            return EndpointView(None, False, detail="being created")
        state = _state_name(endpoint.provisioning_state)
        if state in ("failed", "canceled"):
            # A new PUT is how Azure ML retries a resource whose provisioning failed: the endpoint as it is, so a
            # failed traffic change is asked again and no deployment loses its share.
            self._client.online_endpoints.begin_create_or_update(endpoint)
        deployments = tuple(self._deployment(d) for d in self._client.online_deployments.list(self.name))
        traffic = {name: int(share) for name, share in (endpoint.traffic or {}).items()}
        # Until its own operation ends (creation, a traffic change) the endpoint takes no other change.
        return EndpointView(
            endpoint.scoring_uri, state == "succeeded", deployments, traffic, detail=_ENDPOINT_STATES.get(state, state)
        )

    def _deployment(self, deployment: OnlineDeployment) -> Deployment:
        model = str(deployment.model or "")
        found = _MODEL_VERSION.search(model)
        version = found.group(1) if found else model
        state_name = _state_name(deployment.provisioning_state)
        state = _DEPLOYMENT_STATES.get(state_name, DeploymentState.CREATING)
        if state == DeploymentState.FAILED:
            detail = (
                f"provisioning {state_name} (`az ml online-deployment get-logs -e {self.name} -n {deployment.name}`)"
            )
        else:  # the state says it all, unless Azure ML is updating or scaling it
            detail = "" if state_name in ("creating", "succeeded", "deleting") else state_name or "not provisioned yet"
        return Deployment(str(deployment.name), version, state, detail)

    def create_deployment(self, name: str, version: ModelVersion) -> None:
        entity = deployment_entity(self._settings, self.name, name, version.name, version.version)
        self._client.online_deployments.begin_create_or_update(entity)

    def delete_deployment(self, name: str) -> None:
        self._client.online_deployments.begin_delete(name=name, endpoint_name=self.name)

    def set_traffic(self, traffic: dict[str, int]) -> None:
        endpoint = self._client.online_endpoints.get(self.name)
        endpoint.traffic = dict(traffic)
        self._client.online_endpoints.begin_create_or_update(endpoint)

    def score(self, request: dict[str, Any], deployment: str | None = None) -> Any:
        where = f"{self.name}/{deployment}" if deployment else self.name
        with tempfile.TemporaryDirectory(prefix="scoring-") as scratch:
            request_file = Path(scratch) / "request.json"
            request_file.write_text(json.dumps(request))
            try:
                answer = self._client.online_endpoints.invoke(
                    endpoint_name=self.name, request_file=str(request_file), deployment_name=deployment
                )
            except AzureError as error:  # HTTP errors, timeouts, the SDK's own MlException
                raise ScoringFailed(f"{where} did not answer: {type(error).__name__}: {str(error)[:300]}") from None
        try:
            return json.loads(answer)
        except (TypeError, ValueError):
            raise ScoringFailed(f"{where} answered something other than JSON: {str(answer)[:200]!r}") from None


def write_endpoint_yaml(settings: Settings, folder: Path, version: str) -> list[Path]:
    """The endpoint's and a deployment's YAML (`az ml online-endpoint create -f`, `az ml online-deployment create
    -f`), as the rollout would create them for model `version`; no network. Without SERVING_ENDPOINT_NAME the
    endpoint is named after the model."""
    import yaml

    name = settings.SERVING_ENDPOINT_NAME or _endpoint_name_for(settings.MODEL_BASE_NAME)
    deployment = deployment_entity(settings, name, deployment_name(version), settings.MODEL_BASE_NAME, version)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, schema, entity in (
        ("endpoint.yml", ENDPOINT_SCHEMA, endpoint_entity(name)),
        ("deployment.yml", DEPLOYMENT_SCHEMA, deployment),
    ):
        # Through JSON: the SDK's dump holds OrderedDicts, which yaml.safe_dump refuses.
        document = {"$schema": schema, **json.loads(json.dumps(entity._to_dict()))}
        path = folder / file_name
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        written.append(path)
    return written


def _endpoint_name_for(model: str) -> str:
    """An endpoint name (a letter, then 2-31 letters, digits or hyphens, not ending with a hyphen) from a model's."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", model).strip("-")
    name = name if name[:1].isalpha() else f"m-{name}"
    return name[:32].rstrip("-").ljust(3, "0")
