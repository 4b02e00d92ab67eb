"""The rollout: the endpoint follows the champion, one step per tick, never blocking the caller.

Each tick looks at the champion and the endpoint and takes the next step: deploy the champion's version (no
traffic), wait for it, smoke-test it through the endpoint, move traffic to it (a canary share first, when asked),
and keep the deployment it replaced until the next change, so that a rollback to it is a traffic switch. Older
deployments are deleted. A deployment or smoke test that fails leaves traffic where it was, is said in the status
and through `on_failure` (ServingFailed), and is retried after a back-off that doubles per failure.

What it did is kept as one `ServingStatus` (a blob the status page, the API and `retrain endpoint` read).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from retrainer.serving.endpoint import Deployment, DeploymentState, Endpoint, EndpointView, deployment_name
from shared.records import ModelVersion

log = logging.getLogger(__name__)

#: The back-off doubles per consecutive failure, up to this many times the first.
_MAX_BACKOFF_FACTOR = 8


class SmokeResult(BaseModel):
    """A new deployment's smoke test: holdout sheets scored through the endpoint, against the champion's figure."""

    model_config = ConfigDict(extra="ignore")

    sheets: int
    map50: float | None = None
    expected: float | None = None
    tolerance: float = 0.0
    passed: bool
    message: str


ServingState = Literal["none", "deploying", "canary", "serving", "failed"]


class ServingStatus(BaseModel):
    """What serves the champion: which version answers requests, since when, and what the rollout is doing."""

    model_config = ConfigDict(extra="ignore")

    backend: str
    endpoint: str
    url: str | None = None
    #: The version that answers requests now (None before the first deployment took traffic).
    version: str | None = None
    state: ServingState = "none"
    since: str | None = None
    #: The champion being rolled out, and its deployment.
    target: str | None = None
    deployment: str | None = None
    #: The deployment that served before the live one: kept, so a rollback to it is a traffic switch.
    previous: str | None = None
    message: str = ""
    failures: int = 0
    retry_at: str | None = None
    canary_since: str | None = None
    smoke: SmokeResult | None = None
    updated: str | None = None


@dataclass(frozen=True)
class Champion:
    """The version to serve, and the mAP@0.5 its promotion recorded (what the smoke test is held to)."""

    version: ModelVersion
    score: float | None


@dataclass(frozen=True)
class ServingRule:
    canary_percent: int = 0
    canary_minutes: float = 30
    retry_minutes: float = 15


class StatusStore:
    """Where the status is kept: read and written whole."""

    def __init__(self, load: Callable[[], ServingStatus | None], save: Callable[[ServingStatus], None]) -> None:
        self.load, self.save = load, save


Smoke = Callable[[Endpoint, str, Champion], SmokeResult]


class Rollout:
    """One step of the rollout per `tick`."""

    def __init__(
        self,
        endpoint: Endpoint,
        champion: Callable[[], Champion | None],
        smoke: Smoke,
        store: StatusStore,
        rule: ServingRule,
        clock: Callable[[], datetime],
        on_failure: Callable[[ServingStatus], None] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._champion = champion
        self._smoke = smoke
        self._store = store
        self._rule = rule
        self._clock = clock
        self._on_failure = on_failure

    def tick(self) -> ServingStatus:
        """Take the next step towards serving the champion; returns (and keeps) the status."""
        stored = self._store.load()
        status = stored or ServingStatus(backend=self._endpoint.backend, endpoint=self._endpoint.name)
        status = status.model_copy(
            deep=True, update={"backend": self._endpoint.backend, "endpoint": self._endpoint.name}
        )
        status = self._step(status)
        if stored is None or status.model_dump(exclude={"updated"}) != stored.model_dump(exclude={"updated"}):
            status.updated = self._clock().isoformat()
            self._store.save(status)  # written when something changed: a tick a second costs a read, not a write
        return status

    def _step(self, status: ServingStatus) -> ServingStatus:
        champion = self._champion()
        view = self._endpoint.view()
        status.url = view.url
        live = view.live()
        if live is not None and status.version != live.version:  # traffic moved outside the rollout: say what is
            status.version, status.since = live.version, self._now()
        if champion is None:
            status.message = "no model has been promoted yet: nothing to serve"
            return status
        if not view.ready:
            why = view.detail or "being created"
            return self._say(status, "deploying", f"the endpoint {self._endpoint.name} is not ready: {why}")
        target = champion.version.version
        name = deployment_name(target)
        if status.target != target:  # a new champion: a new rollout, with no failures held against it
            status.target, status.deployment, status.failures, status.retry_at = target, name, 0, None
            status.smoke, status.canary_since = None, None
        if live is not None and live.name == name and view.traffic.get(name, 0) == 100:
            self._clean_up(view, keep={name, status.previous or ""})
            if status.state == "serving":
                return status  # keeps saying how it came to serve
            return self._say(status, "serving", f"version {target} answers every request")
        if status.retry_at is not None and self._clock() < datetime.fromisoformat(status.retry_at):
            return status  # failed: waits for its back-off, traffic where it was
        deployment = view.deployment(name)
        if deployment is None:
            self._endpoint.create_deployment(name, champion.version)
            return self._say(status, "deploying", f"deploying version {target} as {name}")
        if deployment.state in (DeploymentState.CREATING, DeploymentState.DELETING):
            return self._say(status, "deploying", f"{name} is {deployment.state}: {deployment.detail}".rstrip(": "))
        if deployment.state == DeploymentState.FAILED:
            self._endpoint.delete_deployment(name)
            return self._fail(status, f"deployment {name} of version {target} failed: {deployment.detail}")
        return self._move_traffic(status, view, deployment, live, champion)

    def _move_traffic(
        self,
        status: ServingStatus,
        view: EndpointView,
        deployment: Deployment,
        live: Deployment | None,
        champion: Champion,
    ) -> ServingStatus:
        name, share = deployment.name, view.traffic.get(deployment.name, 0)
        rollback = name == status.previous  # it served before this change, smoke-tested then: switch back at once
        if share == 0 and not rollback:
            status.smoke = self._smoke(self._endpoint, name, champion)
            if not status.smoke.passed:
                self._endpoint.delete_deployment(name)
                return self._fail(status, f"the smoke test of {name} failed: {status.smoke.message}")
            if self._rule.canary_percent and live is not None:
                canary = self._rule.canary_percent
                self._endpoint.set_traffic(
                    {**{d.name: 0 for d in view.deployments}, name: canary, live.name: 100 - canary}
                )
                status.canary_since = self._now()
                return self._say(status, "canary", f"{name} takes {canary}% of requests, {live.name} the rest")
        elif 0 < share < 100 and status.canary_since is not None:
            ends = datetime.fromisoformat(status.canary_since) + timedelta(minutes=self._rule.canary_minutes)
            if self._clock() < ends:
                return self._say(status, "canary", f"{name} takes {share}% of requests until {ends:%H:%M} UTC")
        self._endpoint.set_traffic({**{d.name: 0 for d in view.deployments}, name: 100})
        status.previous = live.name if live is not None and live.name != name else status.previous
        status.version, status.since = deployment.version, self._now()
        status.failures, status.retry_at, status.canary_since = 0, None, None
        log.info("serving: version %s answers every request (%s)", deployment.version, name)
        how = "switched back to the kept deployment" if rollback else "smoke-tested, then given all traffic"
        return self._say(status, "serving", f"version {deployment.version} answers every request ({how})")

    def _clean_up(self, view: EndpointView, keep: set[str]) -> None:
        """Delete deployments other than the live one and the one it replaced (kept for a rollback)."""
        for deployment in view.deployments:
            idle = view.traffic.get(deployment.name, 0) == 0 and deployment.state != DeploymentState.DELETING
            if idle and deployment.name not in keep:
                self._endpoint.delete_deployment(deployment.name)

    def _fail(self, status: ServingStatus, message: str) -> ServingStatus:
        status.failures += 1
        backoff = self._rule.retry_minutes * min(2 ** (status.failures - 1), _MAX_BACKOFF_FACTOR)
        status.retry_at = (self._clock() + timedelta(minutes=backoff)).isoformat()
        serving = f"version {status.version} still answers" if status.version else "nothing serves yet"
        self._say(status, "failed", f"{message}; {serving}; retrying after {status.retry_at[:16]} UTC")
        log.error("serving: %s", status.message)
        if self._on_failure is not None:
            self._on_failure(status)
        return status

    def _say(self, status: ServingStatus, state: ServingState, message: str) -> ServingStatus:
        status.state, status.message = state, message
        return status

    def _now(self) -> str:
        return self._clock().isoformat()
