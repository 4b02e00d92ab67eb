# --- the function app: Flex Consumption, Python 3.11, storage by identity ----------------------------

resource "azurerm_storage_account" "functions" {
  #checkov:skip=CKV_AZURE_33:Queue logging is a data-plane setting, which this configuration leaves alone (data_plane_available = false); the host's queues carry no data of ours.
  #checkov:skip=CKV_AZURE_59:The function app reaches its storage over the public endpoint (no VNet here).
  #checkov:skip=CKV_AZURE_206:The host's state is re-creatable; LRS is enough.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; a customer-managed key is an organisation choice.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need a VNet, which this deployment does not create.
  name                            = "st${local.prefix}func"
  resource_group_name             = azurerm_resource_group.main.name
  location                        = azurerm_resource_group.main.location
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
  sas_policy {
    expiration_period = "01.00:00:00"
  }
  tags = var.tags
}

resource "azurerm_storage_container" "deployment" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to the account's diagnostic settings, not per container.
  name                  = "app-package"
  storage_account_id    = azurerm_storage_account.functions.id
  container_access_type = "private"
}

resource "azurerm_service_plan" "functions" {
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales out by itself; a minimum instance count does not apply.
  #checkov:skip=CKV_AZURE_225:Zone redundancy is configured per app on Flex Consumption, not on the plan.
  name                = "asp-${local.prefix}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = var.tags
}

resource "azurerm_function_app_flex_consumption" "main" {
  name                        = "func-${local.prefix}"
  resource_group_name         = azurerm_resource_group.main.name
  location                    = azurerm_resource_group.main.location
  service_plan_id             = azurerm_service_plan.functions.id
  storage_container_type      = "blobContainer"
  storage_container_endpoint  = "${azurerm_storage_account.functions.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
  storage_authentication_type = "SystemAssignedIdentity"
  runtime_name                = "python"
  runtime_version             = "3.11"
  maximum_instance_count      = var.function_maximum_instances
  instance_memory_in_mb       = 2048
  https_only                  = true
  # Publishing authenticates with Entra ID (func azure functionapp publish, az), not basic credentials.
  webdeploy_publish_basic_authentication_enabled = false
  app_settings                                   = merge(local.function_settings, local.serving_settings)
  identity {
    type = "SystemAssigned"
  }
  site_config {
    minimum_tls_version                    = "1.2"
    http2_enabled                          = true
    application_insights_connection_string = azurerm_application_insights.main.connection_string
  }
  tags = var.tags
}
