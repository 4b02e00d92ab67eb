"""In-memory stand-ins for the fast tier: a pipeline runner, Table Storage tables, and the blob container.

The table and container fakes keep the semantics the code relies on (ETags, conditional writes,
insert-only creates, 404s), so the real `Ledger` runs on them unchanged; the service tests run on
both these fakes and Azurite, which keeps the fakes honest.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableEntity, TableErrorCode, TableTransactionError, TransactionOperation, UpdateMode

from retrainer.datastore import BlobMissingError, LockBusy, StoredBlob
from retrainer.ledger.rows import Operation
from shared.promotion import PromotionRecord
from shared.records import RunState, RunStatus

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Data, Model

    from shared.registry import ModelRegistry
    from shared.registry.azureml import AzureMLModelRegistry


class FakeRunner:
    """The boundary where Azure ML (or the local runner) would be. Tests set statuses and make calls fail."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.statuses: dict[str, RunStatus] = {}
        self.fail_submit: Exception | None = None
        self.fail_status: Exception | None = None
        self.fail_list: Exception | None = None
        self.canceled: list[str] = []
        #: Ids the next submissions return, in order (a backend that names its runs oddly); then run-<n>.
        self.next_run_ids: list[str] = []
        self._lock = threading.Lock()

    def submit_pipeline(self, label: str) -> str:
        if self.fail_submit is not None:
            raise self.fail_submit
        with self._lock:
            run_id = self.next_run_ids.pop(0) if self.next_run_ids else f"run-{len(self.submitted) + 1}"
            self.submitted.append(label)
            self.statuses[run_id] = RunStatus(run_id, RunState.QUEUED, "Queued", label=label)
        return run_id

    def run_status(self, run_id: str) -> RunStatus:
        if self.fail_status is not None:
            raise self.fail_status
        return self.statuses[run_id]

    def finish(
        self, run_id: str, state: RunState, decision: PromotionRecord | None = None, error: str | None = None
    ) -> None:
        label = self.statuses[run_id].label if run_id in self.statuses else ""
        self.statuses[run_id] = RunStatus(run_id, state, state.title(), error, decision, label=label)

    def cancel_run(self, run_id: str) -> None:
        self.canceled.append(run_id)
        self.finish(run_id, RunState.CANCELED)

    def list_runs(self, limit: int = 20) -> list[RunStatus]:
        if self.fail_list is not None:
            raise self.fail_list
        return list(self.statuses.values())[:limit]


#: Table Storage's documented limits: a string property holds at most 64 KiB of UTF-16 (32K characters of the
#: Basic Multilingual Plane; Azurite refuses the 32,769th), an entity at most 1 MiB, counted as the service does.
MAX_PROPERTY_BYTES = 64 * 1024
MAX_ENTITY_BYTES = 1024 * 1024


def _utf16_bytes(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass"))


def _entity_bytes(entity: Mapping[str, Any]) -> int:
    """An entity's size by the service's published formula (4 bytes, the keys, then each property)."""
    size = 4 + _utf16_bytes(entity["PartitionKey"] + entity["RowKey"])
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        if isinstance(value, str):
            value_bytes = 4 + _utf16_bytes(value)
        elif isinstance(value, bytes):
            value_bytes = 4 + len(value)
        else:  # bool 1, int32 4, int64, double and datetime 8: 8 is never too little
            value_bytes = 8
        size += 8 + 2 * len(name) + value_bytes
    return size


def with_error_code(error: HttpResponseError, code: object) -> HttpResponseError:
    """The error carrying the service's error code, as the SDK sets it when it decodes the service's answer."""
    error.error_code = code  # type: ignore[attr-defined]  # set at run time: azure-core does not declare it
    return error


def _refused(code: TableErrorCode, message: str) -> HttpResponseError:
    return with_error_code(HttpResponseError(message=message), code)


def check_table_limits(entity: Mapping[str, Any]) -> None:
    """Refuse, as Table Storage and Azurite do, a string property over 64 KiB or an entity over 1 MiB."""
    for name, value in entity.items():
        if isinstance(value, str) and _utf16_bytes(value) > MAX_PROPERTY_BYTES:
            raise _refused(
                TableErrorCode.PROPERTY_VALUE_TOO_LARGE,
                f"The property value exceeds the maximum allowed size (64KB): {name} holds {len(value)} characters",
            )
    if _entity_bytes(entity) > MAX_ENTITY_BYTES:
        raise _refused(TableErrorCode.ENTITY_TOO_LARGE, "The entity is larger than the maximum allowed size (1MB).")


def _row(values: Mapping[str, Any], etag: str) -> TableEntity:
    row = TableEntity(**values)
    row._metadata = {"etag": etag, "timestamp": None}
    return row


class InMemoryTable:
    """The part of `azure.data.tables.TableClient` the ledger uses (`retrainer.ledger.rows.Table`), with ETag
    semantics and the service's size limits."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        self._lock = threading.RLock()

    def create_table(self) -> None:
        pass

    def _stored(self, entity: Mapping[str, Any]) -> None:
        check_table_limits(entity)
        self._rows[(entity["PartitionKey"], entity["RowKey"])] = (dict(entity), f'W/"{uuid.uuid4().hex}"')

    def create_entity(self, entity: Mapping[str, Any]) -> None:
        with self._lock:
            if (entity["PartitionKey"], entity["RowKey"]) in self._rows:
                raise ResourceExistsError("The specified entity already exists.")
            self._stored(entity)

    def get_entity(self, partition_key: str, row_key: str) -> TableEntity:
        with self._lock:
            if (partition_key, row_key) not in self._rows:
                raise ResourceNotFoundError("The specified resource does not exist.")
            return _row(*self._rows[(partition_key, row_key)])

    def update_entity(
        self,
        entity: Mapping[str, Any],
        mode: UpdateMode = UpdateMode.MERGE,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> None:
        with self._lock:
            key = (entity["PartitionKey"], entity["RowKey"])
            if key not in self._rows:
                raise ResourceNotFoundError("The specified resource does not exist.")
            values, current = self._rows[key]
            if match_condition == MatchConditions.IfNotModified and etag != current:
                raise ResourceModifiedError("The update condition specified in the request was not satisfied.")
            self._stored({**values, **entity} if mode == UpdateMode.MERGE else entity)

    def upsert_entity(self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE) -> None:
        with self._lock:
            values = self._rows.get((entity["PartitionKey"], entity["RowKey"]), ({}, ""))[0]
            self._stored({**values, **entity} if mode == UpdateMode.MERGE else entity)

    def delete_entity(self, partition_key: str, row_key: str) -> None:
        with self._lock:
            self._rows.pop((partition_key, row_key), None)

    def query_entities(self, query_filter: str, results_per_page: int | None = None) -> Iterator[TableEntity]:
        """Filters of `eq`, `ge` and `lt` clauses joined by `and`, on keys only: any other property would make
        Table Storage scan the whole partition, so the fake refuses it. Rows come in key order, as there."""
        compare = {"eq": str.__eq__, "ge": str.__ge__, "lt": str.__lt__}
        clauses = []
        for clause in query_filter.split(" and "):
            name, operator, literal = clause.split(" ", 2)
            assert name in ("PartitionKey", "RowKey"), f"a filter on {name} scans the partition: {query_filter}"
            assert operator in compare and literal.startswith("'") and literal.endswith("'"), clause
            clauses.append((name, compare[operator], literal[1:-1].replace("''", "'")))
        with self._lock:  # the rows as they stood when the query ran: a row deleted meanwhile still comes back
            rows = sorted(self._rows.items())
        for (partition_key, row_key), (values, etag) in rows:
            keys = {"PartitionKey": partition_key, "RowKey": row_key}
            if all(test(keys[name], value) for name, test, value in clauses):
                yield _row(values, etag)

    def submit_transaction(self, operations: Iterable[Operation]) -> None:
        """All or nothing, as an entity group transaction: on any failure the rows are as before."""
        with self._lock:
            before = dict(self._rows)
            try:
                for operation, entity, *rest in operations:
                    options = rest[0] if rest else {}
                    if operation == TransactionOperation.CREATE:
                        self.create_entity(entity)
                    elif operation == TransactionOperation.DELETE:
                        if (entity["PartitionKey"], entity["RowKey"]) not in self._rows:
                            raise ResourceNotFoundError("The specified resource does not exist.")
                        self.delete_entity(entity["PartitionKey"], entity["RowKey"])
                    elif operation == TransactionOperation.UPSERT:
                        self.upsert_entity(entity, mode=options.get("mode", UpdateMode.MERGE))
                    else:
                        assert operation == TransactionOperation.UPDATE, operation
                        self.update_entity(entity, **options)
            except HttpResponseError as error:
                self._rows = before
                codes = {
                    ResourceExistsError: "EntityAlreadyExists",
                    ResourceNotFoundError: "ResourceNotFound",
                    ResourceModifiedError: "UpdateConditionNotSatisfied",
                }
                code = codes.get(type(error)) or getattr(error, "error_code", "")
                raise with_error_code(
                    TableTransactionError(message=str(error)), getattr(code, "value", code)
                ) from error


class InMemoryTableService:
    """`TableServiceClient.get_table_client` over in-memory tables."""

    def __init__(self) -> None:
        self._tables: dict[str, InMemoryTable] = {}

    def get_table_client(self, table_name: str) -> InMemoryTable:
        return self._tables.setdefault(table_name, InMemoryTable())


class InMemoryDatastore:
    """The blob operations the service uses, with ETags."""

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[bytes, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @contextlib.contextmanager
    def exclusive(self, path: str, wait_seconds: float = 90.0) -> Iterator[None]:
        with self._locks_lock:
            lock = self._locks.setdefault(path, threading.Lock())
        if not lock.acquire(timeout=wait_seconds):
            raise LockBusy(f"{path} stayed locked for {wait_seconds:g} s; try again")
        try:
            yield
        finally:
            lock.release()

    def read(self, path: str) -> bytes:
        return self.read_with_etag(path)[0]

    def read_with_etag(self, path: str) -> tuple[bytes, str]:
        if path not in self._blobs:
            raise BlobMissingError(path)
        return self._blobs[path]

    def exists(self, path: str) -> bool:
        return path in self._blobs

    def etag(self, path: str) -> str:
        return self.read_with_etag(path)[1]

    def write(self, path: str, data: bytes) -> None:
        self._blobs[path] = (data, f'"0x{hashlib.md5(data + uuid.uuid4().bytes).hexdigest()[:16]}"')

    def write_json(self, path: str, document: object) -> None:
        self.write(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())

    def delete(self, path: str, etag: str | None = None) -> None:
        self._blobs.pop(path, None)

    def list(self, prefix: str) -> Iterator[StoredBlob]:
        for name in sorted(self._blobs):
            if name.startswith(prefix):
                data = self._blobs[name][0]
                yield StoredBlob(name, len(data), hashlib.md5(data).digest())


def first_promotion(reason: str = "the first model") -> PromotionRecord:
    """The tag step's record for a first model, promoted because no model was best yet."""
    return PromotionRecord(
        name="pid-symbol-detector",
        challenger_version="1",
        chosen_version="1",
        best_version="1",
        promoted=True,
        champion_change="service-first",
        champion_since="2026-01-01T00:00:00.000000+00:00",
        challenger_score=0.9,
        reason=reason,
    )


class FakeAzureMLModels:
    """Stands in for `MLClient.models`' network calls, keeping the SDK's own `Model` entities and their files.

    `create_or_update` stores what the SDK would send (a copy of the entity, the next version when it has none,
    the files of a local `path`); `get` answers a copy, as the service does; `download` writes the files where
    the SDK would. Versions count per name, as on Azure ML (a model and a document each have a version 1).
    `lose_files(version)` is a version of the model whose files the registry no longer has. `before_write` and
    `after_write` run around each write, `before_get` before each `get` of one version: a racing writer."""

    def __init__(self) -> None:
        from azure.ai.ml.entities import Model

        self._model = Model
        #: (name, version) -> the stored entity, and its files
        self.stored: dict[tuple[str, str], Model] = {}
        self.files: dict[tuple[str, str], dict[str, bytes]] = {}
        self.before_write: Callable[[Model], None] | None = None
        self.after_write: Callable[[Model], None] | None = None
        self.before_get: Callable[[str], None] | None = None

    def create_or_update(self, model: Model) -> Model:
        assert model.name, "the SDK sends no model without a name"
        if self.before_write is not None:
            self.before_write(model)
        version = str(model.version or sum(name == model.name for name, _ in self.stored) + 1)
        source = Path(str(model.path)) if model.path and not str(model.path).startswith("azureml") else None
        if source is not None and (model.name, version) in self.stored:  # versions are immutable but for tags
            raise ResourceExistsError(f"{model.name}:{version} exists: only its tags and description can change")
        if source is not None and source.is_dir():
            self.files[(model.name, version)] = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
        stored = self._model(
            name=model.name,
            version=version,
            path=f"azureml://models/{model.name}/{version}",
            type=model.type,
            tags=dict(model.tags or {}),
        )
        self.stored[(model.name, version)] = stored
        if self.after_write is not None:
            self.after_write(stored)
        return stored

    def stored_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags the service holds for a version (as sent: the SDK sends a dict, maybe empty)."""
        return dict(self.stored[(name, version)].tags or {})

    def list(self, name: str) -> list[Model]:
        return [self._copy(name, v) for n, v in self.stored if n == name]

    def get(self, name: str, version: str) -> Model:
        if self.before_get is not None:
            self.before_get(version)
        return self._copy(name, version)

    def _copy(self, name: str, version: str) -> Model:

        if (name, version) not in self.stored:
            raise ResourceNotFoundError(f"{name}:{version} not found")
        model = self.stored[(name, version)]
        return self._model(
            name=model.name, version=model.version, path=model.path, type=model.type, tags=dict(model.tags or {})
        )

    def download(self, name: str, version: str, download_path: str) -> None:
        target = Path(download_path) / name / "model"
        target.mkdir(parents=True)
        for file_name, content in self.files.get((name, version), {}).items():
            (target / file_name).write_bytes(content)

    def lose_files(self, version: str, name: str = "pid-symbol-detector") -> None:
        self.files.pop((name, version), None)


def registry_after(decision: PromotionRecord, tmp_path: Path) -> AzureMLModelRegistry:
    """An Azure ML registry (the SDK's `Model` entities) as a run's tag step leaves it after `decision`: versions 1 to
    its challenger registered, the previous champion tagged best, then, when the step applied its promotion, the
    challenger tagged best under the decision's claim."""
    from shared.champion.swap import move_best
    from shared.champion.tags import Claim

    registry = azureml_registry(FakeMLClient())
    folder = tmp_path / "registered-model"
    folder.mkdir(exist_ok=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    for _ in range(int(decision.challenger_version)):
        registry.register_model(decision.name, folder, description="", tags={"mean_average_precision": "0.5"})
    if decision.champion_version:
        earlier = Claim("service", "2026-01-01T00:00:00.000000+00:00", "service-earlier")
        move_best(registry, decision.name, None, decision.champion_version, earlier, None)
    if decision.champion_change:
        claim = Claim("service", decision.champion_since, decision.champion_change)
        move_best(registry, decision.name, decision.champion_version, decision.challenger_version, claim, None)
    return registry


#: Where the fake workspace is, as Azure ML names its resources.
WORKSPACE_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-test/providers/"
    "Microsoft.MachineLearningServices/workspaces/mlw-test"
)
LOCATION = "westeurope"


def service_error(status: int, code: str, message: str) -> HttpResponseError:
    """An error as Azure ML answers it (status and code; the SDK raises it as HttpResponseError)."""
    error = HttpResponseError(message=f"({code}) {message}")
    error.status_code = status
    return with_error_code(error, code)


class FakePoller:
    """What a `begin_*` call answers: the operation goes on at the service. The rollout must never wait for it."""

    def done(self) -> bool:
        return False

    def result(self, timeout: float | None = None) -> None:
        raise AssertionError("waited for a long-running operation: a timer function must never block on one")


class FakeOnlineService:
    """Azure ML's side of managed online endpoints: each resource kept as the REST body the SDK sends (its entity's
    own `_to_rest_*` conversion, which validates it), with what the service adds (id, provisioning state, scoring
    URI, defaults, the model resolved to its ARM id). Operations stay in progress until the test calls `finish()`,
    as they last minutes on Azure; the service refuses what Azure ML refuses (a change to an endpoint or deployment
    whose operation is still going on, traffic to a deployment that is not ready or shares that do not add up to 100,
    deleting a deployment that takes traffic).

    `models[version]` is how the model of that version answers a scoring request (default: `answer`); a callable
    that raises an `HttpResponseError` is a failing deployment. `fail_versions` end their deployments Failed."""

    def __init__(self) -> None:
        self.endpoints: dict[str, dict] = {}
        self.deployments: dict[tuple[str, str], dict] = {}
        self.models: dict[str, Callable[[dict], object]] = {}
        self.answer: Callable[[dict], object] = lambda request: [{"boxes": []} for _ in request["input_data"]["data"]]
        self.fail_versions: set[str] = set()
        self.calls: list[str] = []
        self.scored: list[str] = []

    # --- what the test drives ---------------------------------------------------------------------------------

    def finish(self) -> None:
        """Every operation in progress ends (minutes later, on Azure)."""
        for body in self.endpoints.values():
            if body["properties"]["provisioningState"] in ("Creating", "Updating"):
                body["properties"]["provisioningState"] = "Succeeded"
        for key, body in list(self.deployments.items()):
            state = body["properties"]["provisioningState"]
            if state == "Deleting":
                del self.deployments[key]
            elif state in ("Creating", "Updating"):
                failed = self.version_of(body) in self.fail_versions
                body["properties"]["provisioningState"] = "Failed" if failed else "Succeeded"

    def traffic(self, endpoint: str) -> dict[str, int]:
        return dict(self.endpoints[endpoint]["properties"].get("traffic") or {})

    def endpoint_state(self, endpoint: str) -> str:
        return str(self.endpoints[endpoint]["properties"]["provisioningState"])

    def deployment_states(self, endpoint: str) -> dict[str, str]:
        return {
            name: body["properties"]["provisioningState"]
            for (e, name), body in self.deployments.items()
            if e == endpoint
        }

    @staticmethod
    def version_of(body: dict) -> str:
        return str(body["properties"]["model"]).rsplit("/", 1)[-1]

    # --- the service's rules -----------------------------------------------------------------------------------

    def endpoint(self, name: str) -> dict:

        if name not in self.endpoints:
            raise ResourceNotFoundError(f"(UserError) Could not find online endpoint {name}")
        return self.endpoints[name]

    def put_endpoint(self, name: str, body: dict) -> None:
        existing = self.endpoints.get(name)
        if existing is not None and existing["properties"]["provisioningState"] in ("Creating", "Updating"):
            raise service_error(409, "Conflict", f"an operation on endpoint {name} is in progress")
        traffic = body["properties"].get("traffic") or {}
        if traffic:
            states = self.deployment_states(name)
            not_ready = [d for d in traffic if states.get(d) != "Succeeded"]
            if not_ready or sum(traffic.values()) != 100:
                raise service_error(400, "BadArgument", f"invalid traffic {traffic}: not ready {not_ready}")
        body["id"], body["name"] = f"{WORKSPACE_ID}/onlineEndpoints/{name}", name
        body["properties"]["provisioningState"] = "Updating" if existing else "Creating"
        body["properties"]["scoringUri"] = f"https://{name}.{LOCATION}.inference.ml.azure.com/score"
        self.endpoints[name] = body
        self.calls.append(f"PUT endpoint {name} traffic={traffic}")

    def put_deployment(self, endpoint: str, name: str, body: dict) -> None:
        state = self.endpoint(endpoint)["properties"]["provisioningState"]
        if state in ("Creating", "Updating"):
            raise service_error(409, "Conflict", f"an operation on endpoint {endpoint} is in progress")
        existing = self.deployments.get((endpoint, name))
        if existing is not None and existing["properties"]["provisioningState"] in ("Creating", "Updating", "Deleting"):
            raise service_error(409, "Conflict", f"an operation on deployment {name} is in progress")
        model = str(body["properties"]["model"])
        if model.startswith("azureml:"):  # the SDK resolves a short reference to the model's ARM id before it sends
            _, model_name, version = model.split(":")
            body["properties"]["model"] = f"{WORKSPACE_ID}/models/{model_name}/versions/{version}"
        body["id"], body["name"] = f"{WORKSPACE_ID}/onlineEndpoints/{endpoint}/deployments/{name}", name
        body["properties"].setdefault("scaleSettings", {"scaleType": "Default"})
        body["properties"]["provisioningState"] = "Updating" if existing else "Creating"
        self.deployments[(endpoint, name)] = body
        self.calls.append(f"PUT deployment {endpoint}/{name}")

    def delete_deployment(self, endpoint: str, name: str) -> None:

        body = self.deployments.get((endpoint, name))
        if body is None:
            raise ResourceNotFoundError(f"(UserError) Could not find deployment {name}")
        if self.endpoint(endpoint)["properties"]["provisioningState"] in ("Creating", "Updating"):
            raise service_error(409, "Conflict", f"an operation on endpoint {endpoint} is in progress")
        if self.traffic(endpoint).get(name, 0) > 0:
            raise service_error(400, "BadArgument", f"deployment {name} takes traffic: move it first")
        body["properties"]["provisioningState"] = "Deleting"
        self.calls.append(f"DELETE deployment {endpoint}/{name}")

    def score(self, endpoint: str, request: dict, deployment: str | None) -> str:
        if deployment is None:
            live = {name: share for name, share in self.traffic(endpoint).items() if share > 0}
            if not live:
                raise service_error(404, "NotFound", "the endpoint has no deployment with a positive weight")
            deployment = max(live, key=lambda name: live[name])
        body = self.deployments[(endpoint, deployment)]
        if body["properties"]["provisioningState"] != "Succeeded":
            raise service_error(424, "ModelError", f"deployment {deployment} is not ready")
        self.scored.append(deployment)
        version = self.version_of(body)
        return json.dumps(self.models.get(version, self.answer)(request))


class FakeOnlineEndpoints:
    """`MLClient.online_endpoints` over `FakeOnlineService`: the SDK's entities in and out, only the network faked."""

    def __init__(self, service: FakeOnlineService) -> None:
        self._service = service

    def get(self, name: str) -> object:

        from azure.ai.ml._restclient.arm_ml_service.models import OnlineEndpoint as OnlineEndpointData
        from azure.ai.ml.entities import OnlineEndpoint

        endpoint = OnlineEndpoint._from_rest_object(OnlineEndpointData(copy.deepcopy(self._service.endpoint(name))))
        for deployment in self._service.deployment_states(name):  # as the SDK: deployments without traffic at 0
            endpoint.traffic.setdefault(deployment, 0)
        return endpoint

    def begin_create_or_update(self, endpoint: object) -> FakePoller:
        from azure.ai.ml.entities import OnlineEndpoint

        assert isinstance(endpoint, OnlineEndpoint), type(endpoint)
        if endpoint.traffic:  # as the SDK: zero shares are not sent
            endpoint.traffic = {name: share for name, share in endpoint.traffic.items() if share}
        body = endpoint._to_rest_online_endpoint(location=LOCATION).as_dict()
        self._service.put_endpoint(str(endpoint.name), body)
        return FakePoller()

    def invoke(self, endpoint_name: str, *, request_file: str, deployment_name: str | None = None, **_: object) -> str:
        from azure.ai.ml.exceptions import ValidationException

        request = json.loads(Path(request_file).read_bytes())  # as the SDK: the request is read from the file
        if deployment_name is not None and deployment_name not in self._service.deployment_states(endpoint_name):
            raise ValidationException(
                message=f"Deployment name {deployment_name} not found for this endpoint",
                no_personal_data_message="Deployment name not found for this endpoint",
            )
        self._service.endpoint(endpoint_name)
        return self._service.score(endpoint_name, request, deployment_name)


class FakeOnlineDeployments:
    """`MLClient.online_deployments` over `FakeOnlineService`."""

    def __init__(self, service: FakeOnlineService) -> None:
        self._service = service

    def begin_create_or_update(self, deployment: object) -> FakePoller:
        from azure.ai.ml.entities import ManagedOnlineDeployment

        assert isinstance(deployment, ManagedOnlineDeployment), type(deployment)
        self._service.endpoint(str(deployment.endpoint_name))  # as the SDK: the endpoint must exist
        body = deployment._to_rest_object(location=LOCATION).as_dict()
        self._service.put_deployment(str(deployment.endpoint_name), str(deployment.name), body)
        return FakePoller()

    def get(self, name: str, endpoint_name: str) -> object:

        if (endpoint_name, name) not in self._service.deployments:
            raise ResourceNotFoundError(f"(UserError) Could not find deployment {name}")
        return self._entity(endpoint_name, name)

    def list(self, endpoint_name: str) -> list[object]:
        return [self._entity(endpoint_name, name) for name in self._service.deployment_states(endpoint_name)]

    def begin_delete(self, name: str, endpoint_name: str) -> FakePoller:
        self._service.delete_deployment(endpoint_name, name)
        return FakePoller()

    def _entity(self, endpoint_name: str, name: str) -> object:

        from azure.ai.ml._restclient.arm_ml_service.models import OnlineDeployment as OnlineDeploymentData
        from azure.ai.ml.entities import ManagedOnlineDeployment, OnlineDeployment

        body = copy.deepcopy(self._service.deployments[(endpoint_name, name)])
        deployment = OnlineDeployment._from_rest_object(OnlineDeploymentData(body))
        assert isinstance(deployment, ManagedOnlineDeployment), type(deployment)  # the SDK's annotation says less
        deployment.endpoint_name = endpoint_name
        return deployment


class FakeDataOperations:
    """Stands in for the one network call, `MLClient.data.create_or_update`, as the service answers it."""

    def __init__(self) -> None:
        self.sent: list[Data] = []

    def create_or_update(self, data: Data) -> Data:
        from azure.ai.ml.entities import Data

        self.sent.append(data)
        return Data(
            name=data.name, version=str(len(self.sent) + 4), path="azureml://datastores/x/paths/y", type=data.type
        )


class FakeMLClient:
    """An `MLClient` with its model, data asset and online endpoint operations."""

    def __init__(self) -> None:
        self.models = FakeAzureMLModels()
        self.data = FakeDataOperations()
        self.online = FakeOnlineService()
        self.online_endpoints = FakeOnlineEndpoints(self.online)
        self.online_deployments = FakeOnlineDeployments(self.online)

    def as_ml_client(self) -> MLClient:
        """This client where the code takes an `MLClient`: it answers the calls that code makes (the SDK's own
        entities in and out), not the whole client's surface, so it is not typed as one."""
        return cast("MLClient", self)


def azureml_registry(client: FakeMLClient) -> AzureMLModelRegistry:
    """The Azure ML registry's own code over the fake client."""
    from shared.registry.azureml import AzureMLModelRegistry

    return AzureMLModelRegistry(client.as_ml_client())


def fake_models(registry: ModelRegistry) -> FakeAzureMLModels:
    """The fake model operations behind an Azure ML registry made by `azureml_registry`: a test races writers there."""
    from shared.registry.azureml import AzureMLModelRegistry

    assert isinstance(registry, AzureMLModelRegistry), type(registry)
    models = registry._ml_client.models
    assert isinstance(models, FakeAzureMLModels), type(models)
    return models


def promotion_with_classes(classes: int, seed: int = 7) -> PromotionRecord:
    """The tag step's record of a challenger promoted over version 1 on a label map of `classes` classes, every
    class in the per-class guard (held) and in both per-class maps, with full-precision figures as it writes
    them: 150 classes make a record longer than a table property may hold."""
    import random

    from shared.promotion import ClassComparison, ClassGuard, Comparison, DifferenceInterval, HoldoutInfo

    draw = random.Random(seed)
    guarded = []
    for index in range(1, classes + 1):
        before = round(draw.uniform(0.3, 0.9), 4)
        after = round(min(1.0, before + draw.uniform(-0.02, 0.1)), 4)
        low = after - before - draw.uniform(0.01, 0.05)
        interval = DifferenceInterval(
            difference=after - before,
            low=low,
            high=after - before + draw.uniform(0.01, 0.05),
            confidence=0.9997,
            resamples=500,
        )
        guarded.append(
            ClassComparison(
                class_id=str(index),
                name=f"instrumentation/pressure indicator type {index}",
                instances=draw.randint(5, 60),
                champion_ap=before,
                challenger_ap=after,
                interval=interval,
            )
        )
    overall = DifferenceInterval(difference=0.04, low=0.012, high=0.071, confidence=0.95, resamples=500)
    return PromotionRecord(
        name="pid-symbol-detector",
        challenger_version="2",
        champion_version="1",
        chosen_version="2",
        best_version="2",
        promoted=True,
        challenger_score=0.84,
        champion_score=0.8,
        reason=f"{overall.words()}: the challenger is better by more than 0, promoted",
        champion_change="service-many-classes",
        champion_since="2026-01-01T06:00:00.000000+00:00",
        comparison=Comparison(
            holdout=HoldoutInfo(assignment_version=1, images=60, digest="sha256:0123456789abcdef"),
            interval=overall,
            scored_images=60,
            sample_limit=200,
            class_guard=ClassGuard(min_instances=20, max_drop=0.1, confidence=0.9997, classes=guarded),
        ),
        challenger_per_class={c.class_id: c.challenger_ap for c in guarded},
        champion_per_class={c.class_id: c.champion_ap for c in guarded},
    )
