# --- Azure ML: the workspace, the datastore over the service's container, the CPU and GPU clusters ---

# Only with workspace_storage_keyless = false: the workspace's system storage (workspaceblobstore)
# with shared keys, as Azure ML has always used it.
resource "azurerm_storage_account" "workspace" {
  #checkov:skip=CKV_AZURE_33:Queue logging is a data-plane setting, which this configuration leaves alone.
  #checkov:skip=CKV_AZURE_59:Public network access stays on: no VNet in this deployment.
  #checkov:skip=CKV_AZURE_206:The workspace's system storage holds re-creatable job artifacts; LRS is enough.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; a customer-managed key is an organisation choice.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need a VNet, which this deployment does not create.
  #checkov:skip=CKV2_AZURE_40:Shared keys on purpose: this account exists only for the key-based workspace option.
  count                           = var.workspace_storage_keyless ? 0 : 1
  name                            = "st${local.prefix}mlw"
  resource_group_name             = azurerm_resource_group.main.name
  location                        = azurerm_resource_group.main.location
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = true # the one account with keys: it exists only when asked for
  blob_properties {
    delete_retention_policy {
      days = 7
    }
  }
  sas_policy {
    expiration_period = "01.00:00:00"
  }
  tags = var.tags
}

resource "azurerm_machine_learning_workspace" "main" {
  #checkov:skip=CKV_AZURE_144:Public network access stays on: the function app submits from outside a VNet.
  #checkov:skip=CKV2_AZURE_50:The datastore account keeps public network access (no VNet here); public blob access is off.
  name                    = "mlw-${local.prefix}"
  resource_group_name     = azurerm_resource_group.main.name
  location                = azurerm_resource_group.main.location
  application_insights_id = azurerm_application_insights.main.id
  key_vault_id            = azurerm_key_vault.main.id
  # Keyless by default: the workspace reaches its system storage (the datastore account, which allows no
  # shared key) by identity, a preview mode of Azure ML. workspace_storage_keyless = false gives the
  # workspace a key-based account of its own for teams that hit a preview gap; the service's container
  # stays keyless either way.
  storage_account_id          = var.workspace_storage_keyless ? azurerm_storage_account.datastore.id : azurerm_storage_account.workspace[0].id
  container_registry_id       = azurerm_container_registry.main.id
  storage_account_access_type = var.workspace_storage_keyless ? "Identity" : "AccessKey"
  identity {
    type = "SystemAssigned"
  }
  tags = var.tags
}

# The pipeline reads azureml://datastores/<this>/paths/...: the service's container, not the
# workspace's system container (workspaceblobstore). Identity-based: no key is stored with it; jobs
# read with their compute's identity.
resource "azurerm_machine_learning_datastore_blobstorage" "data" {
  name                       = var.data_store_name
  workspace_id               = azurerm_machine_learning_workspace.main.id
  storage_container_id       = azurerm_storage_container.datastore.id
  service_data_auth_identity = "WorkspaceSystemAssignedIdentity"
  description                = "Images, labels and models of the retraining service (${var.datastore_container})."
}

# Both clusters run as one user-assigned identity: AutoML writes its best_model output to the workspace's
# identity-based default datastore, and the CPU steps register data assets and models, so both need
# data-contributor rights (Azure ML's role table for identity-based data access). One identity, one
# set of roles; jobs run under it explicitly (the pipeline sets a managed identity, not AmlToken).
#
# Each cluster also has its system-assigned identity, for the image pull: that is the path Microsoft
# documents for a registry without admin user (Azure ML grants a cluster's system-assigned identity
# AcrPull on the workspace registry itself), while a user-assigned identity alone has been reported to
# fail the pull (MachineLearningNotebooks#1733, azureml-examples#3463). Both are kept: the user-assigned
# identity keeps its explicit AcrPull and its data roles (roles.tf), the system-assigned ones get the same
# data roles, so a job holds its rights whichever of the two it signs in as, and infra/deploy.sh checks
# the system identities' AcrPull after every apply.
resource "azurerm_user_assigned_identity" "compute" {
  name                = "id-${local.prefix}-compute"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = var.tags
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
    type         = "SystemAssigned, UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.compute.id]
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
    type         = "SystemAssigned, UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.compute.id]
  }
  tags = var.tags
}
