"""infra/: the Terraform configuration, parsed with python-hcl2, holds the service's invariants.

Only a real subscription can run `terraform apply`; these tests pin what the azurerm 4.x provider
source, the Azure Functions and Event Grid documentation and Azure's retirement notices require.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
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
    merged: dict = {
        "resource": {},
        "data": {},
        "variable": {},
        "output": {},
        "locals": {},
        "terraform": [],
        "provider": [],
    }
    for path in sorted(INFRA.glob("*.tf")):
        parsed = _clean(hcl2.loads(path.read_text()))
        assert isinstance(parsed, dict), path
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for type_name, named in block.items():
                    merged[kind].setdefault(type_name, {}).update(named)
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                merged[kind].update(block)
        for block in parsed.get("locals", []):
            merged["locals"].update(block)
        merged["terraform"] += parsed.get("terraform", [])
        merged["provider"] += parsed.get("provider", [])
    return merged


@pytest.fixture(scope="module")
def source() -> str:
    return "\n".join(path.read_text() for path in sorted(INFRA.glob("*.tf")))


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
        "azurerm_machine_learning_datastore_blobstorage",
        "azurerm_machine_learning_compute_cluster",
        "azurerm_service_plan",
        "azurerm_function_app_flex_consumption",
        "azurerm_eventgrid_system_topic",
        "azurerm_eventgrid_system_topic_event_subscription",
        "azurerm_eventgrid_topic",
        "azurerm_role_assignment",
    }
    assert set(resources["azurerm_machine_learning_compute_cluster"]) == {"cpu", "gpu"}
    assert set(resources["azurerm_storage_account"]) == {"datastore", "functions", "workspace"}


def test_the_function_app_runs_on_flex_consumption_with_python_311_and_storage_by_identity(config: dict) -> None:
    assert "azurerm_linux_function_app" not in config["resource"], "Linux Consumption (Y1) is retiring"
    assert config["resource"]["azurerm_service_plan"]["functions"]["sku_name"] == "FC1"
    app = config["resource"]["azurerm_function_app_flex_consumption"]["main"]
    assert (app["runtime_name"], app["runtime_version"]) == ("python", "3.11")
    assert app["storage_authentication_type"] == "SystemAssignedIdentity" and "storage_access_key" not in app
    assert block(app, "identity")["type"] == "SystemAssigned" and app["https_only"] is True
    assert "application_insights_connection_string" in block(app, "site_config"), "the provider's own argument"


def test_no_key_or_connection_string_anywhere(config: dict, source: str) -> None:
    settings = config["locals"]["function_settings"]
    assert "FUNCTIONS_WORKER_RUNTIME" not in settings and "APPLICATIONINSIGHTS_CONNECTION_STRING" not in settings
    for name, value in settings.items():
        assert not re.search(r"access_key|connection_string|AccountKey|sas", str(value), re.I), name
    assert settings["DATASTORE__blobServiceUri"] == "${azurerm_storage_account.datastore.primary_blob_endpoint}"
    assert settings["DATASTORE__queueServiceUri"] == "${azurerm_storage_account.datastore.primary_queue_endpoint}"
    assert settings["DATASTORE__tableServiceUri"] == "${azurerm_storage_account.datastore.primary_table_endpoint}"
    assert settings["AzureWebJobsStorage__accountName"] == "${azurerm_storage_account.functions.name}"
    assert not re.search(r"primary_access_key|primary_connection_string|account_key\s*=", source)
    for name, account in config["resource"]["azurerm_storage_account"].items():
        if name == "workspace":  # the opt-in key-based workspace storage, created only when asked for
            assert account["count"] == "${var.workspace_storage_keyless ? 0 : 1}"
            assert account["shared_access_key_enabled"] is True
            continue
        assert account["shared_access_key_enabled"] is False, name
    assert config["resource"]["azurerm_application_insights"]["main"]["local_authentication_enabled"] is False
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    workspace = config["resource"]["azurerm_machine_learning_workspace"]["main"]
    assert workspace["storage_account_access_type"] == '${var.workspace_storage_keyless ? "Identity" : "AccessKey"}'
    assert config["variable"]["workspace_storage_keyless"]["default"] is True, "keyless stays the default"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity" and "AzureWebJobsStorage" not in settings
    assert config["resource"]["azurerm_eventgrid_topic"]["model_promoted"]["local_auth_enabled"] is False


def test_app_settings_are_ones_the_service_reads(config: dict) -> None:
    from pydantic import AliasChoices

    from retrainer.settings import Settings

    readable = set()
    for name, field in Settings.model_fields.items():
        readable.add(name)
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if alias else []
        readable.update(choice for choice in choices if isinstance(choice, str))
    host = {
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__credential",
        "DATASTORE__credential",  # read by the blob extension; the code's DefaultAzureCredential agrees with it
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    }
    settings = config["locals"]["function_settings"]
    assert set(settings) - readable - host == set()
    assert settings["WORKSPACE_BACKEND"] == "azureml" and settings["PIPELINE_COMPONENTS"] == "registered"


def test_the_pipeline_gets_an_identity_based_datastore_over_the_service_container(config: dict) -> None:
    datastore = config["resource"]["azurerm_machine_learning_datastore_blobstorage"]["data"]
    assert datastore["storage_container_id"] == "${azurerm_storage_container.datastore.id}"
    assert datastore["service_data_auth_identity"] == "WorkspaceSystemAssignedIdentity"
    assert "account_key" not in datastore and "shared_access_signature" not in datastore
    assert datastore["name"] == "${var.data_store_name}"
    assert config["variable"]["data_store_name"]["default"] != "workspaceblobstore"
    settings = config["locals"]["function_settings"]
    assert settings["DATA_STORE_NAME"] == "${azurerm_machine_learning_datastore_blobstorage.data.name}"


def subscriptions(config: dict) -> dict:
    return config["resource"]["azurerm_eventgrid_system_topic_event_subscription"]


def test_new_images_reach_the_event_grid_function_filtered_and_dead_lettered(config: dict) -> None:
    subscription = subscriptions(config)["new_images"]
    assert subscription["included_event_types"] == ["Microsoft.Storage.BlobCreated"]
    assert block(subscription, "subject_filter")["subject_begins_with"] == (
        "/blobServices/default/containers/${var.datastore_container}/blobs/${var.image_folder}/"
    )
    assert block(subscription, "azure_function_endpoint")["function_id"].endswith("/functions/on_event")
    runs = subscriptions(config)["run_events"]
    events = {"Microsoft.MachineLearningServices.RunCompleted", "Microsoft.MachineLearningServices.RunStatusChanged"}
    assert set(runs["included_event_types"]) == events


def test_label_files_reach_the_blob_trigger_through_its_webhook(config: dict) -> None:
    subscription = subscriptions(config)["label_files"]
    assert subscription["included_event_types"] == ["Microsoft.Storage.BlobCreated"]
    subject = block(subscription, "subject_filter")
    assert subject["subject_begins_with"] == (
        "/blobServices/default/containers/${var.datastore_container}/blobs/${var.label_folder}/"
    )
    assert subject["subject_ends_with"] == ".npy"
    url = block(subscription, "webhook_endpoint")["url"]
    assert url.startswith(
        "https://${azurerm_function_app_flex_consumption.main.default_hostname}/runtime/webhooks/blobs?"
    )
    assert "functionName=Host.Functions.convert_label" in url
    assert "code=${data.azurerm_function_app_host_keys.main[0].blobs_extension_key}" in url
    keys = config["data"]["azurerm_function_app_host_keys"]["main"]
    assert keys["count"] == "${var.event_subscriptions ? 1 : 0}"


def test_every_function_subscription_waits_for_the_published_code_and_dead_letters_by_identity(config: dict) -> None:
    assert set(subscriptions(config)) == {"new_images", "label_files", "run_events"}
    for name, subscription in subscriptions(config).items():
        assert subscription["count"] == "${var.event_subscriptions ? 1 : 0}", name
        assert block(subscription, "retry_policy")["max_delivery_attempts"] >= 10, name
        assert block(subscription, "storage_blob_dead_letter_destination")["storage_blob_container_name"], name
        assert block(subscription, "dead_letter_identity")["type"] == "SystemAssigned", name


def test_model_promoted_has_a_topic_the_app_may_send_to(config: dict) -> None:
    settings = config["locals"]["function_settings"]
    assert settings["EVENTGRID_TOPIC_ENDPOINT"] == "${azurerm_eventgrid_topic.model_promoted.endpoint}"
    roles = role_pairs(config)
    assert ("EventGrid Data Sender", "azurerm_eventgrid_topic.model_promoted", "function") in roles


def role_pairs(config: dict) -> set[tuple[str, str, str]]:
    pairs = set()
    for assignment in config["resource"]["azurerm_role_assignment"].values():
        scope = assignment["scope"].removeprefix("${").removesuffix(".id}")
        principal = assignment["principal_id"]
        who = (
            "function"
            if "function_principal" in principal
            else "deployer"
            if "deployer_principal" in principal
            else principal.split(".")[1]
        )
        pairs.add((assignment["role_definition_name"], scope, who))
    return pairs


def test_every_role_is_a_data_role_scoped_to_one_resource(config: dict) -> None:
    assignments = config["resource"]["azurerm_role_assignment"]
    for name, assignment in assignments.items():
        assert re.fullmatch(r"\$\{azurerm_[a-z_]+\.[a-z_]+\.id\}", assignment["scope"]), name
        assert assignment["role_definition_name"] not in ("Owner", "Contributor"), name
    roles = role_pairs(config)
    datastore = "azurerm_storage_account.datastore"
    for role in ("Storage Blob Data Owner", "Storage Queue Data Contributor", "Storage Table Data Contributor"):
        assert (role, datastore, "function") in roles
    assert ("AzureML Data Scientist", "azurerm_machine_learning_workspace.main", "function") in roles
    assert ("Storage Blob Data Contributor", datastore, "compute") in roles, "AutoML writes best_model"
    assert ("AzureML Data Scientist", "azurerm_machine_learning_workspace.main", "compute") in roles
    assert ("Monitoring Metrics Publisher", "azurerm_application_insights.main", "function") in roles


def test_serving_is_off_unless_an_endpoint_is_named_and_its_settings_reach_the_app(config: dict) -> None:
    from retrainer.settings import Settings

    variables, settings = config["variable"], config["locals"]["function_settings"]
    assert variables["serving_endpoint_name"]["default"] is None, "no endpoint, nothing billed, unless asked"
    assert config["locals"]["serving_settings"] == (
        "${var.serving_endpoint_name == null ? {} : {SERVING_ENDPOINT_NAME = var.serving_endpoint_name}}"
    )
    app = config["resource"]["azurerm_function_app_flex_consumption"]["main"]
    assert app["app_settings"] == "${merge(local.function_settings, local.serving_settings)}"
    assert settings["SERVING_INSTANCE_TYPE"] == "${var.serving_instance_type}"
    assert settings["SERVING_INSTANCE_COUNT"] == "${tostring(var.serving_instance_count)}"
    fields = Settings.model_fields
    assert variables["serving_instance_type"]["default"] == fields["SERVING_INSTANCE_TYPE"].default == "Standard_DS3_v2"
    assert variables["serving_instance_count"]["default"] == fields["SERVING_INSTANCE_COUNT"].default == 1
    pattern = next(m.pattern for m in fields["SERVING_ENDPOINT_NAME"].metadata if hasattr(m, "pattern"))
    assert pattern in block(variables["serving_endpoint_name"], "validation")["condition"], "one rule for the name"


def test_the_app_may_manage_and_score_endpoints_with_its_one_workspace_role_and_deployments_report_telemetry(
    config: dict,
) -> None:
    """AzureML Data Scientist on the workspace (the pipelines need it) covers onlineEndpoints write, delete, read and
    score/action: serving adds no role, and the app holds no broader one (no Contributor, no custom role)."""
    on_workspace = {
        role for role, scope, who in role_pairs(config) if who == "function" and "machine_learning_workspace" in scope
    }
    assert on_workspace == {"AzureML Data Scientist"}
    assert "azurerm_role_definition" not in config["resource"]
    workspace = config["resource"]["azurerm_machine_learning_workspace"]["main"]
    assert workspace["application_insights_id"] == "${azurerm_application_insights.main.id}", (
        "a deployment with app_insights_enabled reports to the workspace's Application Insights"
    )


def test_the_deployer_gets_the_data_roles_that_registering_components_and_loading_data_need(config: dict) -> None:
    deployer = config["resource"]["azurerm_role_assignment"]["deployer_data"]
    assert deployer["principal_id"] == "${local.deployer_principal}"
    assert deployer["scope"] == "${azurerm_storage_account.datastore.id}"
    roles = config["locals"]["deployer_roles"]
    for role in (
        "Storage Blob Data Contributor",
        "Storage File Data Privileged Contributor",
        "Storage Table Data Contributor",
    ):
        assert role in roles
    assert "var.deployer_principal_id" in config["locals"]["deployer_principal"]


def test_roles_the_azure_ml_provider_creates_for_the_workspace_are_not_declared(config: dict) -> None:
    """Where the resource provider creates the workspace's data roles, declaring them 409s: deploy.sh checks them."""
    principals = {a["principal_id"] for a in config["resource"]["azurerm_role_assignment"].values()}
    assert not any("azurerm_machine_learning_workspace.main.identity" in p for p in principals)
    outputs = config["output"]
    assert outputs["ml_workspace_principal_id"]["value"] == (
        "${azurerm_machine_learning_workspace.main.identity[0].principal_id}"
    )
    keyless = outputs["workspace_identity_storage_id"]["value"]
    assert keyless == '${var.workspace_storage_keyless ? azurerm_storage_account.datastore.id : ""}'


def test_the_compute_identity_may_pull_the_steps_image_from_the_registry(config: dict) -> None:
    """Azure ML grants AcrPull by itself only to a system-assigned cluster identity (the documented path): each
    cluster has one, beside the user-assigned identity that keeps its explicit AcrPull, and both hold the data
    roles, so a job has its rights whichever it signs in as."""
    assert config["resource"]["azurerm_container_registry"]["main"]["admin_enabled"] is False
    workspace = config["resource"]["azurerm_machine_learning_workspace"]["main"]
    assert workspace["container_registry_id"] == "${azurerm_container_registry.main.id}"
    clusters = config["resource"]["azurerm_machine_learning_compute_cluster"]
    for cluster in clusters.values():
        identity = block(cluster, "identity")
        assert {t.strip() for t in identity["type"].split(",")} == {"SystemAssigned", "UserAssigned"}
        assert identity["identity_ids"] == ["${azurerm_user_assigned_identity.compute.id}"]
    roles = role_pairs(config)
    assert ("AcrPull", "azurerm_container_registry.main", "compute") in roles
    system = config["locals"]["cluster_system_principals"]
    assert set(system) == set(clusters)
    for name, principal in system.items():
        assert principal == f"${{azurerm_machine_learning_compute_cluster.{name}.identity[0].principal_id}}"
    for assignment, role, scope in (
        ("cluster_blobs", "Storage Blob Data Contributor", "${azurerm_storage_account.datastore.id}"),
        ("cluster_ml", "AzureML Data Scientist", "${azurerm_machine_learning_workspace.main.id}"),
    ):
        body = config["resource"]["azurerm_role_assignment"][assignment]
        assert body["for_each"] == "${local.cluster_system_principals}" and body["principal_id"] == "${each.value}"
        assert (body["role_definition_name"], body["scope"]) == (role, scope)
        assert ("compute", body["role_definition_name"]) in {(w, r) for r, s, w in roles if s in scope}, "mirrored"
    assert "compute_system_principal_ids" in config["output"]
    outputs = config["output"]
    assert outputs["compute_identity_principal_id"]["value"] == "${azurerm_user_assigned_identity.compute.principal_id}"
    assert outputs["container_registry_id"]["value"] == "${azurerm_container_registry.main.id}"


def test_a_datastore_client_id_always_comes_with_the_managed_identity_credential(config: dict) -> None:
    """The blob extension takes a user-assigned identity only from __credential=managedidentity with __clientId."""
    settings = config["locals"]["function_settings"]
    assert settings["DATASTORE__credential"] == "managedidentity"
    for name in settings:
        if name.endswith("__clientId"):
            assert settings[name.removesuffix("clientId") + "credential"] == "managedidentity", name
    readme = (INFRA.parent / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("|") and "`DATASTORE__clientId`" in line]
    assert "DATASTORE__credential=managedidentity" in row, "README says to set __credential with __clientId"


def test_the_provider_is_pinned_and_reads_storage_without_the_data_plane(config: dict, source: str) -> None:
    (terraform,) = config["terraform"]
    azurerm = block(terraform, "required_providers")["azurerm"]
    assert azurerm["version"] == ">= 4.77, < 5.0", "storage_account_access_type on the workspace needs 4.77"
    backend = block(terraform, "backend")["azurerm"]
    assert backend["use_azuread_auth"] is True, "the state holds host keys: a remote backend reached by Entra ID"
    sample = (INFRA / "backend.hcl.sample").read_text()
    assert "use_azuread_auth     = true" in sample and "backend.hcl" in (INFRA.parent / ".gitignore").read_text()
    (provider,) = config["provider"]
    features = block(provider["azurerm"], "features")
    assert block(features, "storage")["data_plane_available"] is False
    assert not re.search(r"\bsource_arm_resource_id\b|\benable_rbac_authorization\b", source), "deprecated"


def test_the_default_gpu_is_a_current_size(config: dict) -> None:
    gpu = config["variable"]["gpu_vm_size"]
    assert gpu["default"] == "Standard_NC4as_T4_v3"
    assert "Standard_NC6s_v3" not in (INFRA / "terraform.tfvars.sample").read_text()


def test_no_admin_users_and_no_public_blob_access(config: dict) -> None:
    assert config["resource"]["azurerm_container_registry"]["main"]["admin_enabled"] is False
    for name, account in config["resource"]["azurerm_storage_account"].items():
        assert account["allow_nested_items_to_be_public"] is False, name
        assert account["min_tls_version"] == "TLS1_2" and account["https_traffic_only_enabled"] is True, name
    for container in config["resource"]["azurerm_storage_container"].values():
        assert container["container_access_type"] == "private"


def test_clusters_scale_to_zero_and_share_one_user_assigned_identity(config: dict) -> None:
    for name, cluster in config["resource"]["azurerm_machine_learning_compute_cluster"].items():
        scale = block(cluster, "scale_settings")
        assert scale["min_node_count"] == 0 and scale["max_node_count"] == f"${{var.{name}_max_nodes}}"
        identity = block(cluster, "identity")
        assert "UserAssigned" in identity["type"], "jobs run as the shared identity (and see the AcrPull test)"
        assert identity["identity_ids"] == ["${azurerm_user_assigned_identity.compute.id}"]
        assert cluster["local_auth_enabled"] is False


def test_every_variable_and_output_is_described(config: dict) -> None:
    for kind in ("variable", "output"):
        for name, body in config[kind].items():
            assert body.get("description"), f"{kind} {name} has no description"


# --- the staged deployment -------------------------------------------------------------------------


def fake_tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "$CALLS"\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


AZ = """
role="$(printf '%s\\n' "$@" | sed -n '/^--role$/{n;p;}')"
case "$*" in
  *"role assignment list"*"value-of-function_storage_id"*)
    count=$(cat "$CALLS.app-role" 2>/dev/null || echo 0); echo $((count + 1)) > "$CALLS.app-role"
    [ "$count" -lt "${APP_ROLE_MISSING:-0}" ] || echo "app-role-assignment-id";;
  *"role assignment list"*)
    case ",${WORKSPACE_ROLES:-}," in *",$role,"*) echo "workspace-role-assignment-id";; esac;;
  *"role assignment create"*)
    case "${CREATE_ANSWER:-created}" in
      exists) echo "ERROR: (RoleAssignmentExists) The role assignment already exists." >&2; exit 1;;
      denied) echo "ERROR: (AuthorizationFailed) The client does not have authorization" >&2; exit 1;;
    esac;;
  *"keys list"*) echo "blobs-key";;
  *"appsettings list"*) [ -n "$SETTING_LEFT" ] && echo "AzureWebJobsStorage";;
  *"storage blob list"*)
    count=$(cat "$CALLS.blob" 2>/dev/null || echo 0); echo $((count + 1)) > "$CALLS.blob"
    [ "$count" -ge "${ROLE_DENIALS:-0}" ] || exit 1;;
  *show*) echo "app.example";;
esac
"""


# Core Tools that fail the first PUBLISH_FAILURES publishes, as a 403 from a role still propagating does.
FUNC = """
count=$(cat "$CALLS.publish" 2>/dev/null || echo 0); echo $((count + 1)) > "$CALLS.publish"
[ "$count" -ge "${PUBLISH_FAILURES:-0}" ] || { echo "403 AuthorizationPermissionMismatch" >&2; exit 1; }
"""


def run_deploy(tmp_path: Path, stage: str, state: str, expect_success: bool = True, **env_overrides: str) -> list[str]:
    """infra/deploy.sh with terraform, func, az and curl replaced by recorders (nothing reaches Azure)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir(exist_ok=True)
    calls.write_text("")
    outputs = (
        'case "$*" in *"output -raw"*) [ "${@: -1}" = "${EMPTY_OUTPUT:-}" ] || echo "value-of-${@: -1}";;'
        ' *"state list"*) printf "%s" "$STATE";; esac'
    )
    fake_tool(bin_dir, "terraform", outputs)
    fake_tool(bin_dir, "func", FUNC)
    fake_tool(bin_dir, "az", AZ)
    fake_tool(bin_dir, "curl", "")
    fake_tool(bin_dir, "retrain", "")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(calls),
        "STATE": state,
        "DEPLOY_HOST_WAIT_SECONDS": "0",
        "RETRAIN": str(bin_dir / "retrain"),
        "DEPLOY_ROLE_WAIT_ATTEMPTS": "4",
        "DEPLOY_PUBLISH_WAIT_SECONDS": "0",
        "DEPLOY_RELEASE_FILE": str(tmp_path / "RELEASE"),
        **env_overrides,
    }
    for counter in tmp_path.glob("calls.txt.*"):
        counter.unlink()
    result = subprocess.run(["bash", str(INFRA / "deploy.sh"), stage], env=env, capture_output=True, text=True)
    assert (result.returncode == 0) == expect_success, result.stdout + result.stderr
    recorded = [line for line in calls.read_text().splitlines() if "output -raw" not in line]
    return recorded if expect_success else [*recorded, result.stdout]


def test_the_staged_deployment_registers_then_publishes_before_it_subscribes(tmp_path: Path) -> None:
    calls = run_deploy(tmp_path, "all", state="")
    steps = [
        c.split()[0] + (" " + c.split()[1] if c.startswith(("terraform", "func", "retrain")) else "") for c in calls
    ]
    apply_without = next(i for i, c in enumerate(calls) if "apply" in c and "event_subscriptions=false" in c)
    publish = next(i for i, c in enumerate(calls) if c.startswith("func azure functionapp publish"))
    register = next(i for i, c in enumerate(calls) if c.startswith("retrain register-components"))
    key = next(i for i, c in enumerate(calls) if "keys list" in c)
    apply_with = next(i for i, c in enumerate(calls) if "apply" in c and "event_subscriptions=true" in c)
    assert apply_without < register < publish < key < apply_with, steps


def test_each_stage_can_run_again_without_undoing_the_others(tmp_path: Path) -> None:
    calls = run_deploy(tmp_path, "resources", state="")
    assert any("apply" in c and "event_subscriptions=false" in c for c in calls), calls
    again = run_deploy(tmp_path, "resources", state="azurerm_eventgrid_system_topic_event_subscription.new_images[0]")
    assert any("apply" in c and "event_subscriptions=true" in c for c in again), "a re-run keeps the subscriptions"
    last = run_deploy(tmp_path, "subscriptions", state="")
    assert any("apply" in c and "event_subscriptions=true" in c for c in last)


def test_every_apply_is_followed_by_removing_the_injected_host_storage_connection_string(tmp_path: Path) -> None:
    calls = run_deploy(tmp_path, "all", state="")
    applies = [i for i, c in enumerate(calls) if c.startswith("terraform") and " apply " in c]
    deletes = [i for i, c in enumerate(calls) if "appsettings delete" in c and "AzureWebJobsStorage" in c]
    checks = [i for i, c in enumerate(calls) if "appsettings list" in c]
    assert len(applies) == len(deletes) == len(checks) == 2
    assert all(a < d < c for a, d, c in zip(applies, deletes, checks, strict=True))


def test_deploy_fails_when_the_host_storage_connection_string_survives(tmp_path: Path) -> None:
    *_, output = run_deploy(tmp_path, "resources", state="", expect_success=False, SETTING_LEFT="1")
    assert "AzureWebJobsStorage is still set" in output


def test_publishing_waits_until_the_deployers_data_roles_are_in_force(tmp_path: Path) -> None:
    calls = run_deploy(tmp_path, "code", state="", ROLE_DENIALS="2")
    listed = [i for i, c in enumerate(calls) if "storage blob list" in c]
    publish = next(i for i, c in enumerate(calls) if c.startswith("func azure functionapp publish"))
    assert len(listed) == 3 and listed[-1] < publish, "two refusals, then the roles are in force"
    *calls, output = run_deploy(tmp_path, "code", state="", expect_success=False, ROLE_DENIALS="99")
    assert "still cannot read" in output and not any(c.startswith(("func", "retrain")) for c in calls), "bounded"


def test_the_app_and_the_components_share_one_release_per_commit(tmp_path: Path) -> None:
    calls = run_deploy(tmp_path, "code", state="")
    release = (tmp_path / "RELEASE").read_text().strip()
    commit = subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], capture_output=True, text=True, cwd=INFRA)
    assert release.startswith(f"0.1.0-{commit.stdout.strip()}")
    publish = next(i for i, c in enumerate(calls) if c.startswith("func azure functionapp publish"))
    register = next(i for i, c in enumerate(calls) if c.startswith("retrain register-components"))
    assert register < publish, "the release file exists before either ships"


def role_creations(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("az role assignment create")]


def test_stage_one_creates_the_workspace_identitys_missing_storage_roles(tmp_path: Path) -> None:
    calls = run_deploy(tmp_path, "resources", state="", WORKSPACE_ROLES="Storage Blob Data Contributor")
    apply = next(i for i, c in enumerate(calls) if " apply " in c)
    checks = [i for i, c in enumerate(calls) if c.startswith("az role assignment list")]
    storage_checks = [i for i in checks if "value-of-workspace_identity_storage_id" in calls[i]]
    (created,) = [c for c in role_creations(calls) if "value-of-workspace_identity_storage_id" in c]
    assert len(storage_checks) == 2 and apply < checks[0], "both roles are checked after the apply"
    assert "--role Storage File Data Privileged Contributor" in created, "only the missing one is created"
    assert "--assignee-object-id value-of-ml_workspace_principal_id" in created
    assert "--assignee-principal-type ServicePrincipal" in created, "no Graph lookup of a fresh identity"
    assert "--scope value-of-workspace_identity_storage_id" in created
    both = "Storage Blob Data Contributor,Storage File Data Privileged Contributor"
    everything = f"{both},Contributor,Key Vault Administrator,AcrPull"
    again = run_deploy(tmp_path, "resources", state="", WORKSPACE_ROLES=everything)
    assert role_creations(again) == [], "a re-run finds them all and creates nothing"


def test_a_workspace_role_azure_ml_created_meanwhile_is_not_an_error(tmp_path: Path) -> None:
    *calls, output = run_deploy(tmp_path, "resources", state="", expect_success=False, CREATE_ANSWER="denied")
    assert "could not assign" in output and "infra/deploy.sh resources" in output
    calls = run_deploy(tmp_path, "resources", state="", CREATE_ANSWER="exists")
    assert len(role_creations(calls)) == 5, "409 RoleAssignmentExists counts as assigned, and the stage goes on"


def test_key_based_workspace_storage_needs_no_workspace_identity_roles(tmp_path: Path) -> None:
    calls = run_deploy(tmp_path, "resources", state="", EMPTY_OUTPUT="workspace_identity_storage_id")
    assert not any(c.startswith("az role assignment") and "workspace_identity_storage_id" in c for c in calls)


def test_stage_one_checks_the_workspace_identitys_registry_and_vault_roles_and_the_clusters_pull(
    tmp_path: Path,
) -> None:
    """As its storage roles: Contributor on the registry (it builds the images), Key Vault Administrator on the RBAC
    vault; and the clusters' system identities' AcrPull, which Azure ML grants by itself. Missing ones are created."""
    calls = run_deploy(tmp_path, "resources", state="", WORKSPACE_ROLES="Contributor")
    apply = next(i for i, c in enumerate(calls) if " apply " in c)
    checks = [c for c in calls[apply:] if c.startswith("az role assignment list")]
    assert any("--role Contributor" in c and "value-of-container_registry_id" in c for c in checks)
    assert any("--role Key Vault Administrator" in c and "value-of-key_vault_id" in c for c in checks)
    created = role_creations(calls)
    assert not any("--role Contributor" in c for c in created), "present: not created again"
    (vault,) = [c for c in created if "Key Vault Administrator" in c]
    assert "--assignee-object-id value-of-ml_workspace_principal_id" in vault and "value-of-key_vault_id" in vault
    (pull,) = [c for c in created if "--role AcrPull" in c]
    assert "value-of-compute_system_principal_ids" in pull and "--scope value-of-container_registry_id" in pull


def test_publishing_waits_for_the_apps_role_on_its_host_storage(tmp_path: Path) -> None:
    calls = run_deploy(tmp_path, "code", state="", APP_ROLE_MISSING="2")
    checks = [i for i, c in enumerate(calls) if "role assignment list" in c and "value-of-function_storage_id" in c]
    publish = next(i for i, c in enumerate(calls) if c.startswith("func azure functionapp publish"))
    assert len(checks) == 3 and checks[-1] < publish, "two empty answers, then the assignment exists"
    assert all("--role Storage Blob Data Owner" in calls[i] for i in checks)
    assert all("value-of-function_app_principal_id" in calls[i] for i in checks)
    *calls, output = run_deploy(tmp_path, "code", state="", expect_success=False, APP_ROLE_MISSING="99")
    assert not any(c.startswith("func") for c in calls), "bounded, then stop before publishing"
    assert "Storage Blob Data Owner" in output and "infra/deploy.sh code" in output


def test_a_publish_that_fails_while_roles_propagate_is_retried_within_a_bound(tmp_path: Path) -> None:
    calls = run_deploy(tmp_path, "code", state="", PUBLISH_FAILURES="2")
    publishes = [i for i, c in enumerate(calls) if c.startswith("func azure functionapp publish")]
    assert len(publishes) == 3, "failed twice, then published"
    assert publishes[-1] < next(i for i, c in enumerate(calls) if "keys list" in c)
    *calls, output = run_deploy(
        tmp_path, "code", state="", expect_success=False, PUBLISH_FAILURES="99", DEPLOY_PUBLISH_ATTEMPTS="3"
    )
    assert len([c for c in calls if c.startswith("func azure functionapp publish")]) == 3
    assert not any("keys list" in c for c in calls), "a failed publish ends the stage"
    assert "failed 3 times" in output and "run: infra/deploy.sh code" in output
