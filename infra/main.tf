data "azurerm_client_config" "current" {}

locals {
  prefix = "pid${var.name}"
  # The function app's settings: the service's settings object reads exactly these names.
  function_settings = {
    FUNCTIONS_WORKER_RUNTIME              = "python"
    STORAGE_ACCOUNT_CONNECTION_STRING     = azurerm_storage_account.datastore.primary_connection_string
    STORAGE_ACCOUNT_CONTAINER_NAME        = var.datastore_container
    IMAGE_FOLDER                          = var.image_folder
    LABEL_FOLDER                          = var.label_folder
    QUARANTINE_FOLDER                     = "quarantine"
    LEDGER_TABLE_PREFIX                   = "retrain"
    WORKSPACE_BACKEND                     = "azureml"
    AZURE_SUBSCRIPTION_ID                 = var.subscription_id
    AZURE_RESOURCE_GROUP                  = azurerm_resource_group.main.name
    AZUREML_WORKSPACE_NAME                = azurerm_machine_learning_workspace.main.name
    DATA_STORE_NAME                       = "workspaceblobstore"
    PIPELINE_CPU_COMPUTE_NAME             = azurerm_machine_learning_compute_cluster.cpu.name
    TRAINING_GPU_COMPUTE_NAME             = azurerm_machine_learning_compute_cluster.gpu.name
    RETRAIN_MIN_NEW_IMAGES                = tostring(var.retrain_min_new_images)
    MONITOR_SCHEDULE                      = var.monitor_schedule
    APPLICATIONINSIGHTS_CONNECTION_STRING = azurerm_application_insights.main.connection_string
  }
}

resource "azurerm_resource_group" "main" {
  name     = "rg-${local.prefix}"
  location = var.location
  tags     = var.tags
}

# --- the datastore: images, labels, quarantine and models in one container ------------------------

resource "azurerm_storage_account" "datastore" {
  #checkov:skip=CKV_AZURE_33:Queue service is not used by the datastore.
  #checkov:skip=CKV_AZURE_59:Public network access stays on: the Consumption function app has no VNet integration.
  #checkov:skip=CKV_AZURE_206:Locally redundant storage is enough for re-creatable training data; raise it with the replication type for production.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; a customer-managed key is an organisation choice.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need a VNet, which this deployment does not create.
  #checkov:skip=CKV2_AZURE_40:The blob trigger and the loader use the connection string (STORAGE_ACCOUNT_CONNECTION_STRING).
  #checkov:skip=CKV2_AZURE_41:No SAS policy: SAS tokens are not issued by the service.
  name                            = "st${local.prefix}data"
  resource_group_name             = azurerm_resource_group.main.name
  location                        = azurerm_resource_group.main.location
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
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
  tags                = var.tags
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
  enable_rbac_authorization  = true
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

# --- Azure ML: the workspace and its CPU and GPU clusters --------------------------------------------

resource "azurerm_machine_learning_workspace" "main" {
  #checkov:skip=CKV_AZURE_144:Public network access stays on: the function app submits from outside a VNet.
  #checkov:skip=CKV_AZURE_236:Customer-managed keys are an organisation choice.
  #checkov:skip=CKV2_AZURE_50:The datastore account keeps public network access (no VNet here); public blob access is off.
  name                    = "mlw-${local.prefix}"
  resource_group_name     = azurerm_resource_group.main.name
  location                = azurerm_resource_group.main.location
  application_insights_id = azurerm_application_insights.main.id
  key_vault_id            = azurerm_key_vault.main.id
  storage_account_id      = azurerm_storage_account.datastore.id
  container_registry_id   = azurerm_container_registry.main.id
  identity {
    type = "SystemAssigned"
  }
  tags = var.tags
}

resource "azurerm_machine_learning_compute_cluster" "cpu" {
  name                          = "cpu-cluster"
  machine_learning_workspace_id = azurerm_machine_learning_workspace.main.id
  location                      = azurerm_resource_group.main.location
  vm_priority                   = "Dedicated"
  vm_size                       = var.cpu_vm_size
  local_auth_enabled            = false
  scale_settings {
    min_node_count                       = 0
    max_node_count                       = var.cpu_max_nodes
    scale_down_nodes_after_idle_duration = "PT10M"
  }
  identity {
    type = "SystemAssigned"
  }
  tags = var.tags
}

resource "azurerm_machine_learning_compute_cluster" "gpu" {
  name                          = "gpu-cluster"
  machine_learning_workspace_id = azurerm_machine_learning_workspace.main.id
  location                      = azurerm_resource_group.main.location
  vm_priority                   = "Dedicated"
  vm_size                       = var.gpu_vm_size
  local_auth_enabled            = false
  scale_settings {
    min_node_count                       = 0
    max_node_count                       = var.gpu_max_nodes
    scale_down_nodes_after_idle_duration = "PT10M"
  }
  identity {
    type = "SystemAssigned"
  }
  tags = var.tags
}

# --- the function app ----------------------------------------------------------------------------------

resource "azurerm_storage_account" "functions" {
  #checkov:skip=CKV_AZURE_33:Queue logging: the host's own queues carry no data of ours.
  #checkov:skip=CKV_AZURE_59:The Consumption plan reaches its storage over the public endpoint.
  #checkov:skip=CKV_AZURE_206:The host's state is re-creatable; LRS is enough.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; a customer-managed key is an organisation choice.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need a VNet, which this deployment does not create.
  #checkov:skip=CKV2_AZURE_40:The Consumption plan's AzureWebJobsStorage uses the account key.
  #checkov:skip=CKV2_AZURE_41:No SAS policy: SAS tokens are not issued.
  #checkov:skip=CKV2_AZURE_38:Soft delete is not needed for the host's re-creatable state.
  name                            = "st${local.prefix}func"
  resource_group_name             = azurerm_resource_group.main.name
  location                        = azurerm_resource_group.main.location
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  tags                            = var.tags
}

resource "azurerm_service_plan" "functions" {
  #checkov:skip=CKV_AZURE_212:The Consumption plan scales out by itself; a minimum instance count does not apply.
  #checkov:skip=CKV_AZURE_225:Zone redundancy is not offered on the Consumption plan.
  name                = "asp-${local.prefix}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  os_type             = "Linux"
  sku_name            = "Y1"
  tags                = var.tags
}

resource "azurerm_linux_function_app" "main" {
  #checkov:skip=CKV_AZURE_221:Public network access stays on: Event Grid delivers to the function's public endpoint.
  #checkov:skip=CKV_AZURE_56:Authentication is the function key on HTTP routes; Event Grid uses the system key.
  name                        = "func-${local.prefix}"
  resource_group_name         = azurerm_resource_group.main.name
  location                    = azurerm_resource_group.main.location
  service_plan_id             = azurerm_service_plan.functions.id
  storage_account_name        = azurerm_storage_account.functions.name
  storage_account_access_key  = azurerm_storage_account.functions.primary_access_key
  https_only                  = true
  functions_extension_version = "~4"
  app_settings                = local.function_settings
  identity {
    type = "SystemAssigned"
  }
  site_config {
    ftps_state          = "Disabled"
    http2_enabled       = true
    minimum_tls_version = "1.2"
    application_stack {
      python_version = "3.11"
    }
  }
  tags = var.tags
}

# --- Event Grid: new images and Azure ML's own run events to the function ---------------------------

resource "azurerm_eventgrid_system_topic" "datastore" {
  name                   = "egst-${local.prefix}-data"
  resource_group_name    = azurerm_resource_group.main.name
  location               = azurerm_resource_group.main.location
  source_arm_resource_id = azurerm_storage_account.datastore.id
  topic_type             = "Microsoft.Storage.StorageAccounts"
  tags                   = var.tags
}

resource "azurerm_eventgrid_system_topic_event_subscription" "new_images" {
  name                 = "new-images"
  system_topic         = azurerm_eventgrid_system_topic.datastore.name
  resource_group_name  = azurerm_resource_group.main.name
  included_event_types = ["Microsoft.Storage.BlobCreated"]
  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${var.datastore_container}/blobs/${var.image_folder}/"
  }
  azure_function_endpoint {
    function_id                       = "${azurerm_linux_function_app.main.id}/functions/on_event"
    max_events_per_batch              = 1
    preferred_batch_size_in_kilobytes = 64
  }
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.datastore.id
    storage_blob_container_name = azurerm_storage_container.deadletter.name
  }
}

resource "azurerm_eventgrid_system_topic" "workspace" {
  name                   = "egst-${local.prefix}-mlw"
  resource_group_name    = azurerm_resource_group.main.name
  location               = azurerm_resource_group.main.location
  source_arm_resource_id = azurerm_machine_learning_workspace.main.id
  topic_type             = "Microsoft.MachineLearningServices.Workspaces"
  tags                   = var.tags
}

resource "azurerm_eventgrid_system_topic_event_subscription" "run_events" {
  name                = "run-events"
  system_topic        = azurerm_eventgrid_system_topic.workspace.name
  resource_group_name = azurerm_resource_group.main.name
  included_event_types = [
    "Microsoft.MachineLearningServices.RunCompleted",
    "Microsoft.MachineLearningServices.RunStatusChanged",
  ]
  azure_function_endpoint {
    function_id          = "${azurerm_linux_function_app.main.id}/functions/on_event"
    max_events_per_batch = 1
  }
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.datastore.id
    storage_blob_container_name = azurerm_storage_container.deadletter.name
  }
}

# --- least-privilege role assignments, each scoped to one resource -----------------------------------

resource "azurerm_role_assignment" "function_ml" {
  scope                = azurerm_machine_learning_workspace.main.id
  role_definition_name = "AzureML Data Scientist"
  principal_id         = azurerm_linux_function_app.main.identity[0].principal_id
}

resource "azurerm_role_assignment" "function_blobs" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_linux_function_app.main.identity[0].principal_id
}

resource "azurerm_role_assignment" "function_tables" {
  scope                = azurerm_storage_account.datastore.id
  role_definition_name = "Storage Table Data Contributor"
  principal_id         = azurerm_linux_function_app.main.identity[0].principal_id
}

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
