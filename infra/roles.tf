# --- least-privilege role assignments, each scoped to one resource -----------------------------------

locals {
  function_principal = azurerm_function_app_flex_consumption.main.identity[0].principal_id
}

# The function app: the datastore's blobs (the blob trigger needs Owner for its receipts), queues (the
# blob trigger's bookkeeping) and tables (the ledger).
resource "azurerm_role_assignment" "function_blobs" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = local.function_principal
}

resource "azurerm_role_assignment" "function_queues" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = local.function_principal
}

resource "azurerm_role_assignment" "function_tables" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Table Data Contributor"
  principal_id         = local.function_principal
}

# Its own host storage (AzureWebJobsStorage__accountName and the deployment container).
resource "azurerm_role_assignment" "function_host_blobs" {
  scope                = azurerm_storage_account.functions.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = local.function_principal
}

resource "azurerm_role_assignment" "function_host_queues" {
  scope                = azurerm_storage_account.functions.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = local.function_principal
}

# Submitting pipelines and tagging models needs it; it also covers serving (SERVING_ENDPOINT_NAME), and no
# narrower role would take anything away: its wildcards include onlineEndpoints/write, /delete and /read (the
# endpoint, its deployments, their traffic) and onlineEndpoints/score/action, which a keyless (aad_token) endpoint
# requires of a caller (Azure ML docs, "Authenticate clients for online endpoints"). Compute writes are excluded
# from it, and a managed online endpoint needs none. The endpoint's own system-assigned identity is given AcrPull
# and Storage Blob Data Reader on the workspace's registry and storage by Azure ML itself.
resource "azurerm_role_assignment" "function_ml" {
  scope                = azurerm_machine_learning_workspace.main.id
  role_definition_name = "AzureML Data Scientist"
  principal_id         = local.function_principal
}

resource "azurerm_role_assignment" "function_model_promoted" {
  scope                = azurerm_eventgrid_topic.model_promoted.id
  role_definition_name = "EventGrid Data Sender"
  principal_id         = local.function_principal
}

resource "azurerm_role_assignment" "function_telemetry" {
  scope                = azurerm_application_insights.main.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = local.function_principal
}

# The clusters' identity: read and write the datastore account (the service's container and the
# workspace's default datastore, where AutoML writes best_model), and register assets and models.
resource "azurerm_role_assignment" "compute_blobs" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.compute.principal_id
}

resource "azurerm_role_assignment" "compute_ml" {
  scope                = azurerm_machine_learning_workspace.main.id
  role_definition_name = "AzureML Data Scientist"
  principal_id         = azurerm_user_assigned_identity.compute.principal_id
}

# The steps' environment image lives in the workspace registry, whose admin user is off, so the nodes
# pull it with the cluster's identity. Azure ML grants AcrPull by itself only to a cluster's
# system-assigned identity (docs: "Azure Container Registry without admin user"); a user-assigned one
# without it fails every job before step 1 runs (`Failed to pull Docker image`: azureml-examples issue
# #3463; PR #3956 there grants the compute's principal AcrPull on the workspace registry).
resource "azurerm_role_assignment" "compute_acr_pull" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.compute.principal_id
}

# The clusters' system-assigned identities (ml.tf says why they exist): the same data roles as the
# user-assigned one. Their AcrPull is Azure ML's to grant; infra/deploy.sh checks it after each apply
# (declaring it too would 409 where Azure ML already created it).
locals {
  cluster_system_principals = {
    cpu = azurerm_machine_learning_compute_cluster.cpu.identity[0].principal_id
    gpu = azurerm_machine_learning_compute_cluster.gpu.identity[0].principal_id
  }
}

resource "azurerm_role_assignment" "cluster_blobs" {
  for_each             = local.cluster_system_principals
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = each.value
}

resource "azurerm_role_assignment" "cluster_ml" {
  for_each             = local.cluster_system_principals
  scope                = azurerm_machine_learning_workspace.main.id
  role_definition_name = "AzureML Data Scientist"
  principal_id         = each.value
}

# The workspace's own identity on its key-disabled system storage (Storage Blob Data Contributor and
# Storage File Data Privileged Contributor) is not declared here: where the Azure ML resource provider
# creates these assignments itself, declaring them too fails the apply with 409 RoleAssignmentExists.
# The docs promise that only for workspaces created in the portal, and Terraform creates through ARM,
# so infra/deploy.sh checks them after every apply of stage 1 and creates the missing ones
# (outputs ml_workspace_principal_id and workspace_identity_storage_id). The same holds for its roles on
# the registry (Contributor: it builds the steps' images there) and on the RBAC key vault (Key Vault
# Administrator), which the docs list for a workspace identity: deploy.sh checks those too.

# The deployer (you, or a CI identity: var.deployer_principal_id): `retrain register-components`
# uploads the component code with the caller's token to the key-disabled workspace storage (blobs and
# the file share), and the data loader, run from a laptop, writes images and the ledger.
locals {
  deployer_principal = coalesce(var.deployer_principal_id, data.azurerm_client_config.current.object_id)
  deployer_roles = toset([
    "Storage Blob Data Contributor",
    "Storage File Data Privileged Contributor",
    "Storage Table Data Contributor",
  ])
}

resource "azurerm_role_assignment" "deployer_data" {
  for_each             = local.deployer_roles
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = each.value
  principal_id         = local.deployer_principal
}

# Event Grid writes dead-letters by identity.
resource "azurerm_role_assignment" "datastore_topic_deadletters" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_eventgrid_system_topic.datastore.identity[0].principal_id
}

resource "azurerm_role_assignment" "workspace_topic_deadletters" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_eventgrid_system_topic.workspace.identity[0].principal_id
}
