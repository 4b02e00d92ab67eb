output "resource_group" {
  description = "Resource group of the deployment."
  value       = azurerm_resource_group.main.name
}

output "function_app_name" {
  description = "Function app to publish to: func azure functionapp publish <this>."
  value       = azurerm_linux_function_app.main.name
}

output "ml_workspace_name" {
  description = "Azure ML workspace (AZUREML_WORKSPACE_NAME)."
  value       = azurerm_machine_learning_workspace.main.name
}

output "datastore_account" {
  description = "Storage account of the datastore."
  value       = azurerm_storage_account.datastore.name
}

output "datastore_container" {
  description = "Container of images and labels (STORAGE_ACCOUNT_CONTAINER_NAME)."
  value       = azurerm_storage_container.datastore.name
}
