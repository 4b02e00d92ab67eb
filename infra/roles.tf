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

# The clusters: the CPU steps read the datastore and register assets and models; training reads.
resource "azurerm_role_assignment" "cpu_cluster_blobs" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_machine_learning_compute_cluster.cpu.identity[0].principal_id
}

resource "azurerm_role_assignment" "gpu_cluster_blobs" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_machine_learning_compute_cluster.gpu.identity[0].principal_id
}

resource "azurerm_role_assignment" "cpu_cluster_ml" {
  scope                = azurerm_machine_learning_workspace.main.id
  role_definition_name = "AzureML Data Scientist"
  principal_id         = azurerm_machine_learning_compute_cluster.cpu.identity[0].principal_id
}

# The workspace reaches its system storage and the identity-based datastore by identity.
resource "azurerm_role_assignment" "workspace_blobs" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_machine_learning_workspace.main.identity[0].principal_id
}

resource "azurerm_role_assignment" "workspace_files" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage File Data Privileged Contributor"
  principal_id         = azurerm_machine_learning_workspace.main.identity[0].principal_id
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
