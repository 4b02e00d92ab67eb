# --- Event Grid: storage and Azure ML events to the function app, ModelPromoted out ------------------
#
# The subscriptions that deliver to the function app exist only once its code is published
# (var.event_subscriptions, which infra/deploy.sh sets false in the first stage): Event Grid validates
# an Azure Function destination when the subscription is created, and the blob trigger's webhook key
# exists only after the host has started once.

resource "azurerm_eventgrid_system_topic" "datastore" {
  name                = "egst-${local.prefix}-data"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  source_resource_id  = azurerm_storage_account.datastore.id
  topic_type          = "Microsoft.Storage.StorageAccounts"
  # Dead-letters are written with this identity: the account accepts no shared key.
  identity {
    type = "SystemAssigned"
  }
  tags = var.tags
}

resource "azurerm_eventgrid_system_topic_event_subscription" "new_images" {
  count                = var.event_subscriptions ? 1 : 0
  name                 = "new-images"
  system_topic         = azurerm_eventgrid_system_topic.datastore.name
  resource_group_name  = azurerm_resource_group.main.name
  included_event_types = ["Microsoft.Storage.BlobCreated"]
  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${var.datastore_container}/blobs/${var.image_folder}/"
  }
  azure_function_endpoint {
    function_id                       = "${azurerm_function_app_flex_consumption.main.id}/functions/on_event"
    max_events_per_batch              = 1
    preferred_batch_size_in_kilobytes = 64
  }
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
  dead_letter_identity {
    type = "SystemAssigned"
  }
  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.datastore.id
    storage_blob_container_name = azurerm_storage_container.deadletter.name
  }
}

# The blob trigger (source = EventGrid) never polls: Event Grid posts each new label file to the
# host's blobs extension webhook, authorised by the extension's system key.
data "azurerm_function_app_host_keys" "main" {
  count               = var.event_subscriptions ? 1 : 0
  name                = azurerm_function_app_flex_consumption.main.name
  resource_group_name = azurerm_resource_group.main.name
}

resource "azurerm_eventgrid_system_topic_event_subscription" "label_files" {
  count                = var.event_subscriptions ? 1 : 0
  name                 = "label-files"
  system_topic         = azurerm_eventgrid_system_topic.datastore.name
  resource_group_name  = azurerm_resource_group.main.name
  included_event_types = ["Microsoft.Storage.BlobCreated"]
  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${var.datastore_container}/blobs/${var.label_folder}/"
    subject_ends_with   = ".npy"
  }
  webhook_endpoint {
    url                               = "https://${azurerm_function_app_flex_consumption.main.default_hostname}/runtime/webhooks/blobs?functionName=Host.Functions.convert_label&code=${data.azurerm_function_app_host_keys.main[0].blobs_extension_key}"
    max_events_per_batch              = 1
    preferred_batch_size_in_kilobytes = 64
  }
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
  dead_letter_identity {
    type = "SystemAssigned"
  }
  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.datastore.id
    storage_blob_container_name = azurerm_storage_container.deadletter.name
  }
}

resource "azurerm_eventgrid_system_topic" "workspace" {
  name                = "egst-${local.prefix}-mlw"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  source_resource_id  = azurerm_machine_learning_workspace.main.id
  topic_type          = "Microsoft.MachineLearningServices.Workspaces"
  identity {
    type = "SystemAssigned"
  }
  tags = var.tags
}

resource "azurerm_eventgrid_system_topic_event_subscription" "run_events" {
  count               = var.event_subscriptions ? 1 : 0
  name                = "run-events"
  system_topic        = azurerm_eventgrid_system_topic.workspace.name
  resource_group_name = azurerm_resource_group.main.name
  included_event_types = [
    "Microsoft.MachineLearningServices.RunCompleted",
    "Microsoft.MachineLearningServices.RunStatusChanged",
  ]
  azure_function_endpoint {
    function_id          = "${azurerm_function_app_flex_consumption.main.id}/functions/on_event"
    max_events_per_batch = 1
  }
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
  dead_letter_identity {
    type = "SystemAssigned"
  }
  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.datastore.id
    storage_blob_container_name = azurerm_storage_container.deadletter.name
  }
}

# ModelPromoted goes here; the app publishes with its identity (EventGrid Data Sender), no key.
resource "azurerm_eventgrid_topic" "model_promoted" {
  #checkov:skip=CKV_AZURE_193:Public network access stays on: subscribers of ModelPromoted are outside a VNet here.
  name                = "egt-${local.prefix}-models"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  input_schema        = "EventGridSchema"
  local_auth_enabled  = false
  identity {
    type = "SystemAssigned"
  }
  tags = var.tags
}
