"""Serving on Azure ML: a managed online endpoint that follows the champion, driven by the monitor timer.

Azure ML cannot be reached from here: the endpoint and its deployments are the SDK's own entities
(`ManagedOnlineEndpoint`, `ManagedOnlineDeployment`), converted to the REST bodies the SDK sends and back as Azure ML
answers them (`tests/fakes.FakeOnlineService`); only the network is faked, and an operation lasts until the test
ends it, as it lasts minutes on Azure. The champion is the real one (the champion authority over the SDK's `Model`
entities), the smoke test scores real holdout sheets from the datastore, chosen by the split assignment document in
the registry, and the whole rollout is the one the composition root builds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from retrainer import bootstrap
from retrainer.datastore import BlobStore
from retrainer.ledger import Ledger
from retrainer.serving.rollout import Rollout, ServingStatus
from retrainer.serving.status import read_serving_status
from retrainer.settings import load_settings
from shared.contracts import SplitAssignment, SplitSide
from shared.records import RunState
from tests.champion_world import World
from tests.fakes import FakeMLClient, FakeOnlineService, InMemoryDatastore, InMemoryTableService, azureml_registry
from tests.helpers import Clock, indexed_functions, jpeg_bytes, stored_run

ENDPOINT = "pid-champion"
#: Three holdout sheets and one training sheet: name, width, height, boxes (class id, topX, topY, bottomX, bottomY).
SHEETS = [
    ("holdout-a.jpg", 120, 90, [("1", 0.1, 0.1, 0.3, 0.3), ("2", 0.5, 0.5, 0.7, 0.8)]),
    ("holdout-b.jpg", 121, 90, [("2", 0.2, 0.1, 0.4, 0.3)]),
    ("holdout-c.jpg", 122, 90, [("3", 0.6, 0.1, 0.9, 0.4), ("1", 0.1, 0.6, 0.2, 0.9)]),
    ("train-a.jpg", 123, 90, [("1", 0.1, 0.1, 0.2, 0.2)]),
]


@dataclass
class Azure:
    """The champion's world on Azure ML: the fake workspace's models and online endpoints, the storage, the
    ServingFailed events sent, and the rollout the composition root builds."""

    world: World
    client: FakeMLClient
    failures: list[ServingStatus]

    @property
    def online(self) -> FakeOnlineService:
        return self.client.online

    @property
    def rollout(self) -> Rollout:
        rollout = bootstrap.serving()
        assert rollout is not None
        return rollout

    def status(self) -> ServingStatus | None:
        return read_serving_status(self.world.datastore, "models/serving.json")

    def recorded_status(self) -> ServingStatus:
        status = self.status()
        assert status is not None, "no serving status was recorded"
        return status

    def tick_until(self, state: str, most: int = 6) -> ServingStatus:
        """Tick, letting Azure ML end what it started after each, until the rollout is in `state`."""
        for _ in range(most):
            status = self.rollout.tick()
            self.online.finish()
            if status.state == state:
                return status
        raise AssertionError(f"the rollout never reached {state!r} in {most} ticks: {status.message}")

    def settle(self, version: str, most: int = 12) -> list[ServingStatus]:
        """Tick, then let Azure ML end what it started, until `version` answers every request and nothing is in
        progress: what a few timer ticks some minutes apart see."""
        seen = []
        for _ in range(most):
            seen.append(self.rollout.tick())
            states = {*self.online.deployment_states(ENDPOINT).values(), self.online.endpoint_state(ENDPOINT)}
            settled = states == {"Succeeded"}
            if seen[-1].state == "serving" and seen[-1].version == version and settled:
                return seen
            self.online.finish()
        raise AssertionError(f"version {version} was not served after {most} ticks: {[s.message for s in seen]}")


def truthful_model(request: dict) -> list[dict]:
    """A model that finds every symbol of the sheets it is sent: their labelled boxes, at score 0.9."""
    by_image = {jpeg_bytes(width, height): boxes for _, width, height, boxes in SHEETS}
    answers = []
    for (image,) in request["input_data"]["data"]:
        boxes = by_image.get(base64.b64decode(image), [])  # an image of no sheet: nothing on it
        answers.append(
            {
                "boxes": [
                    {"box": {"topX": x0, "topY": y0, "bottomX": x1, "bottomY": y1}, "label": label, "score": 0.9}
                    for label, x0, y0, x1, y1 in boxes
                ]
            }
        )
    return answers


def blind_model(request: dict) -> list[dict]:
    return [{"boxes": []} for _ in request["input_data"]["data"]]


def write_sheets(world: World, folder: str = "", assign: bool = True) -> None:
    """The sheets in the datastore (in `folder` of the image and label folders), as ingestion leaves them, and
    (`assign`) the split assignment in the registry: it names each sheet by its image's file name."""
    for name, width, height, boxes in SHEETS:
        relative = f"{folder}/{name}" if folder else name
        world.datastore.write(f"data/images/{relative}", jpeg_bytes(width, height))
        labels = [
            {"label": label, "topX": x0, "topY": y0, "bottomX": x1, "bottomY": y1, "isCrowd": 0}
            for label, x0, y0, x1, y1 in boxes
        ]
        record = {"image_url": relative, "image_details": {"width": width, "height": height}, "label": labels}
        world.datastore.write(f"data/labels/{Path(relative).with_suffix('.jsonl')}", json.dumps(record).encode())
    if not assign:
        return
    sides = {name: SplitSide.TRAIN if name.startswith("train") else SplitSide.HOLDOUT for name, *_ in SHEETS}
    assignment = SplitAssignment(version=1, by_name=sides).to_bytes()
    assert world.registry.create_document("pid-symbols-split-assignment", "1", assignment)


def azure_environment(monkeypatch: pytest.MonkeyPatch, **serving: str) -> None:
    for key, value in {
        "WORKSPACE_BACKEND": "azureml",
        "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
        "AZURE_RESOURCE_GROUP": "rg-test",
        "AZUREML_WORKSPACE_NAME": "mlw-test",
        "SERVING_ENDPOINT_NAME": ENDPOINT,
        "SERVING_RETRY_MINUTES": "15",
        **serving,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("EVENTGRID_TOPIC_ENDPOINT", raising=False)


def wired(
    monkeypatch: pytest.MonkeyPatch, storage: tuple[Ledger, BlobStore], clock: Clock, tmp_path: Path
) -> Iterator[Azure]:
    """The app's composition root over the fake workspace: every Azure ML client it makes is the fake's."""
    from shared.registry import azureml as registry_backend

    client = FakeMLClient()
    client.online.answer = truthful_model
    monkeypatch.setattr(registry_backend, "ml_client", lambda *args, **kwargs: client)
    bootstrap.reset()
    world = World(azureml_registry(client), storage, clock, tmp_path)
    write_sheets(world)
    failures: list[ServingStatus] = []
    with pytest.MonkeyPatch.context() as root:  # undone before an environment fixture resets the root
        root.setattr(bootstrap, "champion", lambda settings=None: world.controls)
        root.setattr(bootstrap, "datastore", lambda: world.datastore)
        root.setattr(bootstrap, "ledger", lambda: world.ledger)
        root.setattr(bootstrap, "retraining", lambda: world.service)
        root.setattr(bootstrap, "now_utc", clock)
        root.setattr(bootstrap, "serving_failed_publisher", lambda settings: failures.append)
        yield Azure(world, client, failures)
    bootstrap.reset()


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch, clock: Clock, tmp_path: Path, container_name: str) -> Iterator[Azure]:
    """Azure ML serving on in-memory storage."""
    azure_environment(monkeypatch)
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", container_name)
    in_memory = (Ledger(InMemoryTableService(), "t"), InMemoryDatastore())
    yield from wired(monkeypatch, in_memory, clock, tmp_path)


@pytest.fixture
def azure_on_each_storage(
    monkeypatch: pytest.MonkeyPatch, storage: tuple[Ledger, BlobStore], clock: Clock, tmp_path: Path
) -> Iterator[Azure]:
    """Azure ML serving on in-memory storage, then on Azurite."""
    azure_environment(monkeypatch)
    yield from wired(monkeypatch, storage, clock, tmp_path)


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch, clock: Clock, tmp_path: Path, container_name: str) -> Iterator[Azure]:
    """Azure ML serving with a canary share of 20% for 30 minutes."""
    azure_environment(monkeypatch, SERVING_CANARY_PERCENT="20", SERVING_CANARY_MINUTES="30")
    monkeypatch.setenv("STORAGE_ACCOUNT_CONTAINER_NAME", container_name)
    in_memory = (Ledger(InMemoryTableService(), "t"), InMemoryDatastore())
    yield from wired(monkeypatch, in_memory, clock, tmp_path)


def serving_v1(azure: Azure) -> None:
    azure.world.run(0.80)
    azure.settle("1")


# --- following the champion ----------------------------------------------------------------------------------------


def test_a_new_champion_is_deployed_waited_for_smoke_tested_and_then_given_all_traffic(
    azure_on_each_storage: Azure,
) -> None:
    azure = azure_on_each_storage
    online = azure.online
    azure.world.run(0.80)

    first = azure.rollout.tick()
    assert (first.state, first.message) == ("deploying", f"the endpoint {ENDPOINT} is not ready: being created")
    (endpoint,) = online.endpoints.values()
    assert endpoint["properties"]["authMode"] == "AADToken", "keyless: callers sign in with Entra ID"
    assert endpoint["identity"]["type"] == "SystemAssigned"
    assert azure.rollout.tick().message.endswith("being created"), "a tick while Azure ML works waits, asks nothing"
    online.finish()

    assert azure.rollout.tick().message == "deploying version 1 as model-v1"
    deployment = online.deployments[(ENDPOINT, "model-v1")]["properties"]
    assert deployment["model"].endswith("/models/pid-symbol-detector/versions/1"), "the registered MLflow model"
    assert "environmentId" not in deployment and "codeConfiguration" not in deployment, "a no-code deployment"
    assert deployment["appInsightsEnabled"] is True and deployment["instanceType"] == "Standard_DS3_v2"
    assert deployment["requestSettings"]["requestTimeout"] == "PT3M", "the longest a managed endpoint allows"
    assert deployment["livenessProbe"]["initialDelay"] == "PT33M20S", "as Microsoft's AutoML sample"
    waiting = azure.rollout.tick()
    assert (waiting.state, waiting.message) == ("deploying", "model-v1 is creating")
    assert online.scored == [] and online.traffic(ENDPOINT) == {}, "nothing is sent to a deployment being made"
    online.finish()

    moved = azure.rollout.tick()
    assert online.scored == ["model-v1"] * 3, "three holdout sheets, each to the new deployment by name"
    assert moved.smoke is not None and (moved.smoke.sheets, moved.smoke.map50, moved.smoke.passed) == (3, 1.0, True)
    assert moved.smoke.expected == 0.80, "held to the figure the champion's promotion recorded"
    assert (moved.state, moved.version, moved.url) == (
        "serving",
        "1",
        f"https://{ENDPOINT}.westeurope.inference.ml.azure.com/score",
    )
    assert online.traffic(ENDPOINT) == {"model-v1": 100}
    assert azure.status() == moved, "kept in the status blob the page and the commands read"
    calls = len(online.calls)
    moving = azure.rollout.tick()
    assert moving.message == f"the endpoint {ENDPOINT} is not ready: updating (a traffic change)"
    assert (moving.version, len(online.calls)) == ("1", calls), "no change is asked while the traffic moves"
    online.finish()
    assert azure.rollout.tick().message == "version 1 answers every request"
    assert azure.failures == []


def delete_sheets(world: World) -> None:
    for blob in [*world.datastore.list("data/images/"), *world.datastore.list("data/labels/")]:
        world.datastore.delete(blob.name)


def test_the_smoke_test_scores_holdout_sheets_whose_images_lie_in_sub_folders(azure: Azure) -> None:
    delete_sheets(azure.world)
    write_sheets(azure.world, "plant-a", assign=False)  # data/images/plant-a/holdout-a.jpg and its label beside
    azure.world.run(0.80)
    served = azure.settle("1")
    smoke = next(status.smoke for status in served if status.smoke is not None)
    assert (smoke.sheets, smoke.map50, smoke.passed) == (3, 1.0, True), smoke.message
    assert azure.online.scored == ["model-v1"] * 3


def test_a_holdout_none_of_whose_sheets_can_be_read_fails_the_smoke_test_and_says_so(azure: Azure) -> None:
    delete_sheets(azure.world)
    azure.world.run(0.80)
    failed = azure.tick_until("failed")
    assert failed.state == "failed" and failed.smoke is not None and not failed.smoke.passed
    assert "none of the 3 holdout sheets of the split assignment could be read" in failed.message
    assert azure.online.scored == [], "no blank image stands in for a holdout that is there"


def test_the_next_champion_takes_over_the_previous_stays_for_a_rollback_and_older_ones_go(azure: Azure) -> None:
    serving_v1(azure)
    azure.world.run(0.85)
    azure.settle("2")
    assert azure.online.traffic(ENDPOINT) == {"model-v2": 100}
    assert azure.online.deployment_states(ENDPOINT) == {"model-v1": "Succeeded", "model-v2": "Succeeded"}
    assert azure.recorded_status().previous == "model-v1"

    azure.world.run(0.90)
    azure.settle("3")
    assert azure.online.traffic(ENDPOINT) == {"model-v3": 100}
    assert azure.online.deployment_states(ENDPOINT) == {"model-v2": "Succeeded", "model-v3": "Succeeded"}
    assert "DELETE deployment pid-champion/model-v1" in azure.online.calls, "the one before the previous is deleted"


def test_a_canary_takes_its_share_first_then_every_request(canary: Azure, clock: Clock) -> None:
    serving_v1(canary)
    canary.world.run(0.85)
    status = canary.tick_until("canary")
    assert canary.online.traffic(ENDPOINT) == {"model-v2": 20, "model-v1": 80}
    assert status.message == "model-v2 takes 20% of requests, model-v1 the rest"
    clock.advance(minutes=20)
    assert canary.rollout.tick().state == "canary" and canary.online.traffic(ENDPOINT)["model-v2"] == 20
    clock.advance(minutes=11)
    full = canary.rollout.tick()
    assert (full.state, full.version, full.previous) == ("serving", "2", "model-v1")
    assert canary.online.traffic(ENDPOINT) == {"model-v2": 100}
    assert canary.online.scored.count("model-v2") == 3, "smoke-tested once, before the canary share"


def test_a_rollback_switches_traffic_back_to_the_kept_deployment_without_deploying_or_scoring(azure: Azure) -> None:
    serving_v1(azure)
    azure.world.run(0.85)
    azure.settle("2")
    calls, scored = len(azure.online.calls), len(azure.online.scored)

    azure.world.controls.promote("1", "version 2 misses gate valves", "operator")
    back = azure.rollout.tick()
    assert (back.state, back.version, back.previous) == ("serving", "1", "model-v2")
    assert "switched back to the kept deployment" in back.message
    assert azure.online.calls[calls:] == ["PUT endpoint pid-champion traffic={'model-v1': 100}"], "one traffic switch"
    assert len(azure.online.scored) == scored, "no smoke test: it served before"
    azure.online.finish()
    azure.settle("1")
    assert azure.online.deployment_states(ENDPOINT) == {"model-v1": "Succeeded", "model-v2": "Succeeded"}


def test_retrain_models_and_retrain_endpoint_say_which_version_serves(
    azure: Azure, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from retrainer import cli

    monkeypatch.setenv("STORAGE_ACCOUNT_CONNECTION_STRING", "UseDevelopmentStorage=true")  # storage is the fixture's
    serving_v1(azure)
    azure.world.run(0.85)
    azure.rollout.tick()
    assert cli.main(["models"]) == 0
    shown = capsys.readouterr().out
    line = "serving: version 1 answers requests (azureml endpoint pid-champion); deploying: deploying version 2"
    assert line in shown
    assert cli.main(["models", "--json"]) == 0
    serving = json.loads(capsys.readouterr().out)["serving"]
    assert (serving["version"], serving["state"], serving["target"]) == ("1", "deploying", "2")
    assert cli.main(["endpoint", "--json"]) == 0
    endpoint = json.loads(capsys.readouterr().out)
    assert {key: endpoint[key] for key in ("backend", "url", "version", "state")} == {
        "backend": "azureml",
        "url": f"https://{ENDPOINT}.westeurope.inference.ml.azure.com/score",
        "version": "1",
        "state": "deploying",
    }


# --- failures --------------------------------------------------------------------------------------------------


def test_a_failed_deployment_leaves_traffic_says_so_once_and_retries_after_a_growing_back_off(
    azure: Azure, clock: Clock
) -> None:
    serving_v1(azure)
    azure.online.fail_versions.add("2")
    azure.world.run(0.85)
    for _ in range(4):
        failed = azure.rollout.tick()
        azure.online.finish()
        if failed.state == "failed":
            break
    assert failed.state == "failed" and failed.failures == 1
    assert "deployment model-v2 of version 2 failed: provisioning failed" in failed.message
    assert "az ml online-deployment get-logs -e pid-champion -n model-v2" in failed.message
    assert "version 1 still answers; retrying after" in failed.message
    assert azure.online.traffic(ENDPOINT) == {"model-v1": 100}, "traffic stays where it was"
    assert "model-v2" not in azure.online.deployment_states(ENDPOINT), "the failed deployment is deleted"
    assert [f.target for f in azure.failures] == ["2"], "ServingFailed, once"
    assert azure.recorded_status().state == "failed"

    calls = len(azure.online.calls)
    clock.advance(minutes=14)
    assert azure.rollout.tick().state == "failed" and len(azure.online.calls) == calls, "it waits out its back-off"
    clock.advance(minutes=2)
    assert azure.rollout.tick().message == "deploying version 2 as model-v2", "then tries again"
    azure.online.finish()
    again = azure.rollout.tick()
    assert again.failures == 2 and len(azure.failures) == 2
    assert again.retry_at == (clock() + timedelta(minutes=30)).isoformat(), "the back-off doubled"
    assert azure.online.traffic(ENDPOINT) == {"model-v1": 100}

    azure.online.fail_versions.clear()
    clock.advance(minutes=31)
    azure.online.finish()
    azure.settle("2")
    assert azure.recorded_status().failures == 0 and len(azure.failures) == 2


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (blind_model, "the smoke test of model-v2 failed: mAP@0.5 0.000 on 3 holdout sheets, below the champion's"),
        ("error", "did not answer: HttpResponseError: (ModelError)"),
    ],
    ids=["finds-nothing", "answers-an-error"],
)
def test_a_failed_smoke_test_leaves_traffic_where_it_was_and_says_why(
    azure: Azure, model: Callable[[dict], object] | str, words: str
) -> None:
    from tests.fakes import service_error

    def error(request: dict) -> object:
        raise service_error(424, "ModelError", "the model container answered 500")

    serving_v1(azure)
    azure.online.models["2"] = error if isinstance(model, str) else model
    azure.world.run(0.85)
    for _ in range(4):
        failed = azure.rollout.tick()
        azure.online.finish()
        if failed.state == "failed":
            break
    assert failed.state == "failed" and words in failed.message
    assert failed.smoke is not None and not failed.smoke.passed
    assert azure.online.traffic(ENDPOINT) == {"model-v1": 100} and failed.version == "1"
    assert "model-v2" not in azure.online.deployment_states(ENDPOINT)
    assert len(azure.failures) == 1 and azure.failures[0].smoke == failed.smoke


def test_an_endpoint_whose_provisioning_failed_is_asked_again_with_its_traffic(azure: Azure) -> None:
    serving_v1(azure)
    azure.online.endpoints[ENDPOINT]["properties"]["provisioningState"] = "Failed"
    waiting = azure.rollout.tick()
    assert waiting.message == f"the endpoint {ENDPOINT} is not ready: its provisioning failed (asked again)"
    assert azure.online.calls[-1] == "PUT endpoint pid-champion traffic={'model-v1': 100}", "no share is lost"
    assert waiting.version == "1"


# --- the monitor timer ---------------------------------------------------------------------------------------------


def test_the_monitor_timer_ticks_the_rollout_after_the_runs_and_a_serving_failure_stops_neither(azure: Azure) -> None:
    from azure.core.exceptions import ServiceRequestError

    world = azure.world
    decision = world.tag_step(world.register(0.80))
    run_id = world.service.submit("manual", "new images")
    world.runner.finish(run_id, RunState.COMPLETED, decision)
    monitor = indexed_functions()["monitor"].get_user_function()

    def unreachable(name: str) -> object:
        raise ServiceRequestError("Failed to establish a new connection")

    with pytest.MonkeyPatch.context() as outage:
        outage.setattr(azure.client.online_endpoints, "get", unreachable)
        with pytest.raises(RuntimeError, match=r"1 part\(s\) of the tick failed.*serving: ServiceRequestError"):
            monitor(TimerRequest(past_due=False))
        assert stored_run(world.ledger, run_id).state == RunState.COMPLETED, "the run was followed first"
        assert world.best() == ["1"]

    monitor(TimerRequest(past_due=False))
    assert ENDPOINT in azure.online.endpoints and azure.recorded_status().state == "deploying"


def test_serving_is_off_without_an_endpoint_name_and_on_the_local_backend(
    azure: Azure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = indexed_functions()["monitor"].get_user_function()
    azure.world.run(0.80)
    monkeypatch.delenv("SERVING_ENDPOINT_NAME")
    bootstrap.get_settings.cache_clear()
    assert bootstrap.serving() is None
    monitor(TimerRequest(past_due=False))
    monkeypatch.setenv("SERVING_ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    bootstrap.get_settings.cache_clear()
    bootstrap.serving.cache_clear()
    assert bootstrap.serving() is None, "locally, `retrain serve` serves the champion"
    assert azure.online.endpoints == {} and azure.online.calls == [], "not one call to Azure ML"
    assert azure.status() is None


# --- the dry run ---------------------------------------------------------------------------------------------------


def test_the_dry_run_writes_yaml_the_sdk_loads_back_with_no_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from azure.ai.ml import load_online_deployment, load_online_endpoint
    from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint

    from retrainer import cli
    from retrainer.serving.azureml import write_endpoint_yaml
    from shared.registry import azureml as registry_backend

    def no_network(*args: object, **kwargs: object) -> object:
        raise AssertionError("the dry run reached for Azure ML")

    monkeypatch.setattr(registry_backend, "ml_client", no_network)
    for variable in ("SERVING_ENDPOINT_NAME", "AZURE_SUBSCRIPTION_ID", "AZUREML_WORKSPACE_NAME"):
        monkeypatch.delenv(variable, raising=False)
    assert cli.main(["endpoint", "--dry-run", "--output", str(tmp_path / "plain"), "--version", "7"]) == 0
    assert "endpoint.yml" in capsys.readouterr().out
    endpoint = load_online_endpoint(tmp_path / "plain" / "endpoint.yml")
    assert isinstance(endpoint, ManagedOnlineEndpoint)
    assert (endpoint.name, endpoint.auth_mode) == ("pid-symbol-detector", "aad_token"), "named after the model"

    monkeypatch.setenv("SERVING_ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("SERVING_INSTANCE_TYPE", "Standard_NC4as_T4_v3")
    monkeypatch.setenv("SERVING_INSTANCE_COUNT", "2")
    written = write_endpoint_yaml(load_settings(), tmp_path / "named", "7")
    assert [path.name for path in written] == ["endpoint.yml", "deployment.yml"]
    assert written[0].read_text().startswith("$schema: https://azuremlschemas.azureedge.net/latest/managedOnline")
    endpoint = load_online_endpoint(written[0])
    deployment = load_online_deployment(written[1])
    assert isinstance(endpoint, ManagedOnlineEndpoint) and isinstance(deployment, ManagedOnlineDeployment)
    assert (endpoint.name, endpoint.auth_mode) == (ENDPOINT, "aad_token")
    assert "model: azureml:pid-symbol-detector:7\n" in written[1].read_text(), "the registered model, no code"
    assert (deployment.name, deployment.endpoint_name, deployment.model) == (
        "model-v7",
        ENDPOINT,
        "pid-symbol-detector:7",
    )
    assert (deployment.instance_type, deployment.instance_count) == ("Standard_NC4as_T4_v3", 2)
    assert deployment.app_insights_enabled is True and deployment.environment is None
    assert deployment.request_settings is not None and deployment.request_settings.request_timeout_ms == 180_000
    assert deployment.liveness_probe is not None and deployment.liveness_probe.failure_threshold == 30
    assert deployment.readiness_probe is not None and deployment.readiness_probe.timeout == 10
    # What Azure ML would be sent: the SDK's own conversion accepts both.
    assert endpoint._to_rest_online_endpoint(location="westeurope").properties.auth_mode == "AADToken"
    sku = deployment._to_rest_object(location="westeurope").sku
    assert sku is not None and sku.capacity == 2


def test_a_serving_status_that_does_not_validate_reads_as_none_and_the_next_tick_rewrites_it(azure: Azure) -> None:
    serving_v1(azure)
    azure.world.datastore.write("models/serving.json", b'{"backend": "azureml"}')
    assert azure.status() is None
    assert azure.rollout.tick().version == "1" and azure.recorded_status().version == "1"
