"""infra/: the Terraform configuration, parsed with python-hcl2, holds the service's invariants."""

from __future__ import annotations

import re
from pathlib import Path

import hcl2
import pytest

INFRA = Path(__file__).resolve().parent.parent / "infra"


def _clean(value: object) -> object:
    """python-hcl2 keeps HCL's quotes on keys and strings; drop them."""
    if isinstance(value, dict):
        return {str(k).strip('"'): _clean(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@pytest.fixture(scope="module")
def config() -> dict:
    merged: dict = {"resource": {}, "variable": {}, "output": {}}
    for path in sorted(INFRA.glob("*.tf")):
        parsed = _clean(hcl2.loads(path.read_text()))
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                merged["resource"].setdefault(kind, {}).update(named)
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                merged[kind].update(block)
    return merged


def block(resource: dict, name: str) -> dict:
    value = resource[name]
    return value[0] if isinstance(value, list) else value


def test_every_part_of_the_service_is_provisioned(config: dict) -> None:
    resources = config["resource"]
    assert set(resources) >= {
        "azurerm_resource_group",
        "azurerm_storage_account",
        "azurerm_storage_container",
        "azurerm_key_vault",
        "azurerm_application_insights",
        "azurerm_log_analytics_workspace",
        "azurerm_container_registry",
        "azurerm_machine_learning_workspace",
        "azurerm_machine_learning_compute_cluster",
        "azurerm_service_plan",
        "azurerm_linux_function_app",
        "azurerm_eventgrid_system_topic",
        "azurerm_eventgrid_system_topic_event_subscription",
        "azurerm_role_assignment",
    }
    assert set(resources["azurerm_machine_learning_compute_cluster"]) == {"cpu", "gpu"}
    assert set(resources["azurerm_storage_account"]) == {"datastore", "functions"}


def test_every_role_assignment_is_scoped_to_one_resource(config: dict) -> None:
    assignments = config["resource"]["azurerm_role_assignment"]
    assert len(assignments) >= 5
    for name, assignment in assignments.items():
        assert re.fullmatch(r"\$\{azurerm_[a-z_]+\.[a-z_]+\.id\}", assignment["scope"]), name
        assert "Owner" not in assignment["role_definition_name"] and assignment["role_definition_name"] != "Contributor"
    roles = {(a["role_definition_name"], a["principal_id"].split(".")[1]) for a in assignments.values()}
    assert ("AzureML Data Scientist", "main") in roles
    assert ("Storage Table Data Contributor", "main") in roles


def test_no_admin_users_and_no_public_blob_access(config: dict) -> None:
    assert config["resource"]["azurerm_container_registry"]["main"]["admin_enabled"] is False
    for name, account in config["resource"]["azurerm_storage_account"].items():
        assert account["allow_nested_items_to_be_public"] is False, name
        assert account["min_tls_version"] == "TLS1_2" and account["https_traffic_only_enabled"] is True, name
    for container in config["resource"]["azurerm_storage_container"].values():
        assert container["container_access_type"] == "private"


def test_new_image_events_are_filtered_to_the_image_folder_and_dead_lettered(config: dict) -> None:
    subscription = config["resource"]["azurerm_eventgrid_system_topic_event_subscription"]["new_images"]
    assert subscription["included_event_types"] == ["Microsoft.Storage.BlobCreated"]
    assert block(subscription, "subject_filter")["subject_begins_with"] == (
        "/blobServices/default/containers/${var.datastore_container}/blobs/${var.image_folder}/"
    )
    assert block(subscription, "azure_function_endpoint")["function_id"].endswith("/functions/on_event")
    assert block(subscription, "retry_policy")["max_delivery_attempts"] >= 10
    assert block(subscription, "storage_blob_dead_letter_destination")["storage_blob_container_name"]
    runs = config["resource"]["azurerm_eventgrid_system_topic_event_subscription"]["run_events"]
    events = {"Microsoft.MachineLearningServices.RunCompleted", "Microsoft.MachineLearningServices.RunStatusChanged"}
    assert set(runs["included_event_types"]) == events


def test_clusters_scale_to_zero_with_their_own_identity(config: dict) -> None:
    for name, cluster in config["resource"]["azurerm_machine_learning_compute_cluster"].items():
        scale = block(cluster, "scale_settings")
        assert scale["min_node_count"] == 0 and scale["max_node_count"] == f"${{var.{name}_max_nodes}}"
        assert block(cluster, "identity")["type"] == "SystemAssigned"


def test_function_app_runs_python_311_with_an_identity_and_the_service_settings(config: dict) -> None:
    from retrainer.settings import Settings

    app = config["resource"]["azurerm_linux_function_app"]["main"]
    assert block(app, "identity")["type"] == "SystemAssigned" and app["https_only"] is True
    assert block(block(app, "site_config"), "application_stack")["python_version"] == "3.11"
    main_tf = hcl2.loads((INFRA / "main.tf").read_text())
    settings = _clean(main_tf["locals"][0])["function_settings"]
    unknown = (
        set(settings)
        - set(Settings.model_fields)
        - {"FUNCTIONS_WORKER_RUNTIME", "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    )
    assert not unknown, f"app settings the service does not read: {unknown}"
    assert settings["WORKSPACE_BACKEND"] == "azureml"


def test_every_variable_and_output_is_described(config: dict) -> None:
    for kind in ("variable", "output"):
        for name, body in config[kind].items():
            assert body.get("description"), f"{kind} {name} has no description"
