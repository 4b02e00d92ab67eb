data "azurerm_client_config" "current" {}

locals {
  prefix = "pid${var.name}"
  # The function app's settings: the service's settings object reads exactly these names. No key and
  # no connection string: storage, Azure ML, Event Grid and Application Insights are reached by the
  # app's managed identity. The blob trigger's extension takes a user-assigned identity only when
  # DATASTORE__credential = managedidentity comes with DATASTORE__clientId (a clientId alone leaves it
  # on the system identity while the code signs in as the user-assigned one): __credential is always set.
  function_settings = {
    AzureWebJobsStorage__accountName          = azurerm_storage_account.functions.name
    AzureWebJobsStorage__credential           = "managedidentity"
    DATASTORE__blobServiceUri                 = azurerm_storage_account.datastore.primary_blob_endpoint
    DATASTORE__queueServiceUri                = azurerm_storage_account.datastore.primary_queue_endpoint
    DATASTORE__tableServiceUri                = azurerm_storage_account.datastore.primary_table_endpoint
    DATASTORE__credential                     = "managedidentity"
    STORAGE_ACCOUNT_CONTAINER_NAME            = var.datastore_container
    IMAGE_FOLDER                              = var.image_folder
    LABEL_FOLDER                              = var.label_folder
    LABEL_MAP_BLOB                            = var.label_map_blob
    QUARANTINE_FOLDER                         = "quarantine"
    LEDGER_TABLE_PREFIX                       = "retrain"
    WORKSPACE_BACKEND                         = "azureml"
    AZURE_SUBSCRIPTION_ID                     = var.subscription_id
    AZURE_RESOURCE_GROUP                      = azurerm_resource_group.main.name
    AZUREML_WORKSPACE_NAME                    = azurerm_machine_learning_workspace.main.name
    DATA_STORE_NAME                           = azurerm_machine_learning_datastore_blobstorage.data.name
    PIPELINE_COMPONENTS                       = "registered"
    PIPELINE_CPU_COMPUTE_NAME                 = azurerm_machine_learning_compute_cluster.cpu.name
    TRAINING_GPU_COMPUTE_NAME                 = azurerm_machine_learning_compute_cluster.gpu.name
    RETRAIN_MIN_NEW_IMAGES                    = tostring(var.retrain_min_new_images)
    RETRAIN_MAX_FORCED_RUNS                   = tostring(var.retrain_max_forced_runs)
    MONITOR_SCHEDULE                          = var.monitor_schedule
    EVENTGRID_TOPIC_ENDPOINT                  = azurerm_eventgrid_topic.model_promoted.endpoint
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "Authorization=AAD"
    SERVING_INSTANCE_TYPE                     = var.serving_instance_type
    SERVING_INSTANCE_COUNT                    = tostring(var.serving_instance_count)
  }
  # Serving is off unless an endpoint is named: the app then makes no Azure ML endpoint call at all.
  serving_settings = var.serving_endpoint_name == null ? {} : { SERVING_ENDPOINT_NAME = var.serving_endpoint_name }
}

resource "azurerm_resource_group" "main" {
  name     = "rg-${local.prefix}"
  location = var.location
  tags     = var.tags
}

# --- the datastore: images, labels, quarantine and models in one container ------------------------

resource "azurerm_storage_account" "datastore" {
  #checkov:skip=CKV_AZURE_33:Queue logging is a data-plane setting, which this configuration leaves alone (data_plane_available = false); the queues carry only the blob trigger's bookkeeping.
  #checkov:skip=CKV_AZURE_59:Public network access stays on: Event Grid, the Flex function app and Azure ML reach it without a VNet here.
  #checkov:skip=CKV_AZURE_206:Locally redundant storage is enough for re-creatable training data; raise it with the replication type for production.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; a customer-managed key is an organisation choice.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need a VNet, which this deployment does not create.
  name                            = "st${local.prefix}data"
  resource_group_name             = azurerm_resource_group.main.name
  location                        = azurerm_resource_group.main.location
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  # Keyless: every request is authorised with Entra ID (the app, the clusters, the workspace, Event Grid).
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  blob_properties {
    delete_retention_policy {
      days = 14
    }
    container_delete_retention_policy {
      days = 14
    }
  }
  sas_policy {
    expiration_period = "01.00:00:00"
  }
  tags = var.tags
}

resource "azurerm_storage_container" "datastore" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to the account's diagnostic settings, not per container.
  name                  = var.datastore_container
  storage_account_id    = azurerm_storage_account.datastore.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "deadletter" {
  #checkov:skip=CKV2_AZURE_21:Blob logging goes to the account's diagnostic settings, not per container.
  name                  = "eventgrid-deadletter"
  storage_account_id    = azurerm_storage_account.datastore.id
  container_access_type = "private"
}

# --- monitoring, secrets, images: what the Azure ML workspace needs -------------------------------

resource "azurerm_log_analytics_workspace" "main" {
  name                = "log-${local.prefix}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = var.tags
}

resource "azurerm_application_insights" "main" {
  name                = "appi-${local.prefix}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  workspace_id        = azurerm_log_analytics_workspace.main.id
  application_type    = "web"
  # Entra authentication only: telemetry is sent with the app's identity (Monitoring Metrics Publisher).
  local_authentication_enabled = false
  tags                         = var.tags
}

resource "azurerm_key_vault" "main" {
  #checkov:skip=CKV_AZURE_109:Public network access stays on: no VNet in this deployment.
  #checkov:skip=CKV_AZURE_189:Public network access stays on: no VNet in this deployment.
  #checkov:skip=CKV2_AZURE_32:Private endpoints need a VNet, which this deployment does not create.
  name                       = "kv-${local.prefix}"
  resource_group_name        = azurerm_resource_group.main.name
  location                   = azurerm_resource_group.main.location
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  purge_protection_enabled   = true
  soft_delete_retention_days = 30
  rbac_authorization_enabled = true
  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }
  tags = var.tags
}

resource "azurerm_container_registry" "main" {
  #checkov:skip=CKV_AZURE_139:Public network access stays on: Azure ML builds environments from outside a VNet here.
  #checkov:skip=CKV_AZURE_165:Geo-replication needs the Premium SKU; Basic is enough for one region.
  #checkov:skip=CKV_AZURE_166:Image quarantine needs the Premium SKU.
  #checkov:skip=CKV_AZURE_163:Vulnerability scanning is Defender for Cloud's, enabled per subscription.
  #checkov:skip=CKV_AZURE_164:Signed images need the Premium SKU.
  #checkov:skip=CKV_AZURE_167:Untagged-manifest retention needs the Premium SKU.
  #checkov:skip=CKV_AZURE_233:Zone redundancy needs the Premium SKU.
  #checkov:skip=CKV_AZURE_237:Dedicated data endpoints need the Premium SKU.
  name                = "cr${local.prefix}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  sku                 = "Basic"
  admin_enabled       = false
  tags                = var.tags
}
