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
