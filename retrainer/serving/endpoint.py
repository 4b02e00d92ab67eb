"""The narrow interface to an endpoint and its deployments; `local` and `azureml` implement it.

Every call returns at once: creating and deleting deployments goes on in the background, and `view` tells where it
is, so the rollout never blocks the timer that drives it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.records import ModelVersion


class DeploymentState(enum.StrEnum):
    CREATING = "creating"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"


@dataclass(frozen=True)
class Deployment:
    """One deployment of the endpoint: the model version it serves, and where its provisioning is."""

    name: str
    version: str
    state: DeploymentState
    detail: str = ""


@dataclass(frozen=True)
class EndpointView:
    """The endpoint as it is now: its scoring URL (None until it exists), whether it takes changes (`detail` says
    why not: being created, or updating its traffic), its deployments, and their traffic."""

    url: str | None
    ready: bool
    deployments: tuple[Deployment, ...] = ()
    traffic: dict[str, int] = field(default_factory=dict)
    detail: str = ""

    def deployment(self, name: str) -> Deployment | None:
        return next((d for d in self.deployments if d.name == name), None)

    def live(self) -> Deployment | None:
        """The deployment that takes the most traffic (None when none takes any)."""
        serving = [d for d in self.deployments if self.traffic.get(d.name, 0) > 0]
        return max(serving, key=lambda d: self.traffic[d.name]) if serving else None


class ScoringFailed(RuntimeError):
    """The endpoint did not answer a scoring request (an HTTP error, a timeout); the message says which."""


class Endpoint(Protocol):
    """An endpoint that serves registered model versions through deployments, with traffic split between them."""

    @property
    def backend(self) -> str: ...

    @property
    def name(self) -> str: ...

    def view(self) -> EndpointView:
        """Where the endpoint and its deployments are; makes the endpoint when it does not exist yet."""
        ...

    def create_deployment(self, name: str, version: ModelVersion) -> None:
        """Start deploying `version` as the deployment `name` (with no traffic)."""
        ...

    def delete_deployment(self, name: str) -> None: ...

    def set_traffic(self, traffic: dict[str, int]) -> None:
        """Split the endpoint's traffic between its deployments (percentages that add up to 100)."""
        ...

    def score(self, request: dict[str, Any], deployment: str | None = None) -> Any:
        """The endpoint's answer to a scoring request, through `deployment` alone when given; ScoringFailed."""
        ...


def deployment_name(version: str) -> str:
    """The deployment of a model version (Azure ML: 3 to 32 letters, digits and hyphens, starting with a letter)."""
    return f"model-v{version}"[:32]
