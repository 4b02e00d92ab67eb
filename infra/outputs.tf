output "resource_group" {
  description = "Resource group of the deployment."
  value       = azurerm_resource_group.main.name
}

output "function_app_name" {
  description = "Function app to publish to: func azure functionapp publish <this>."
  value       = azurerm_function_app_flex_consumption.main.name
}

output "subscription_id" {
  description = "Subscription of the deployment (AZURE_SUBSCRIPTION_ID)."
  value       = var.subscription_id
}

output "ml_workspace_name" {
  description = "Azure ML workspace (AZUREML_WORKSPACE_NAME)."
  value       = azurerm_machine_learning_workspace.main.name
}

output "data_store_name" {
  description = "Azure ML datastore over the datastore container (DATA_STORE_NAME)."
  value       = azurerm_machine_learning_datastore_blobstorage.data.name
}

output "datastore_account" {
  description = "Storage account of the datastore."
  value       = azurerm_storage_account.datastore.name
}

output "datastore_blob_endpoint" {
  description = "Blob endpoint of the datastore (DATASTORE__blobServiceUri), for the data loader."
  value       = azurerm_storage_account.datastore.primary_blob_endpoint
}

output "datastore_table_endpoint" {
  description = "Table endpoint of the datastore (DATASTORE__tableServiceUri), for the data loader."
  value       = azurerm_storage_account.datastore.primary_table_endpoint
}

output "datastore_container" {
  description = "Container of images and labels (STORAGE_ACCOUNT_CONTAINER_NAME)."
  value       = azurerm_storage_container.datastore.name
}

output "model_promoted_topic_endpoint" {
  description = "Custom topic that receives ModelPromoted (EVENTGRID_TOPIC_ENDPOINT)."
  value       = azurerm_eventgrid_topic.model_promoted.endpoint
}

output "ml_workspace_principal_id" {
  description = "Principal of the workspace's system-assigned identity (deploy.sh checks its storage roles)."
  value       = azurerm_machine_learning_workspace.main.identity[0].principal_id
}

output "workspace_identity_storage_id" {
  description = "Storage account the workspace reaches by its identity, where it needs blob and file data roles; empty with key-based workspace storage."
  value       = var.workspace_storage_keyless ? azurerm_storage_account.datastore.id : ""
}

output "function_app_principal_id" {
  description = "Principal of the function app's system-assigned identity (deploy.sh waits for its role on the host storage)."
  value       = local.function_principal
}

output "function_storage_id" {
  description = "The function app's host storage account, where its package is deployed."
  value       = azurerm_storage_account.functions.id
}

output "compute_identity_principal_id" {
  description = "Principal of the clusters' user-assigned identity (AcrPull on the registry, data roles on the datastore)."
  value       = azurerm_user_assigned_identity.compute.principal_id
}

output "container_registry_id" {
  description = "The workspace's container registry, which holds the steps' environment image."
  value       = azurerm_container_registry.main.id
}

output "compute_system_principal_ids" {
  description = "Principals of the clusters' system-assigned identities, space-separated (deploy.sh checks their AcrPull)."
  value       = join(" ", values(local.cluster_system_principals))
}

output "key_vault_id" {
  description = "The workspace's key vault, RBAC-authorised (deploy.sh checks the workspace identity's role on it)."
  value       = azurerm_key_vault.main.id
}
