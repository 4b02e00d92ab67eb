# --- Azure ML: the workspace, the datastore over the service's container, the CPU and GPU clusters ---

resource "azurerm_machine_learning_workspace" "main" {
  #checkov:skip=CKV_AZURE_144:Public network access stays on: the function app submits from outside a VNet.
  #checkov:skip=CKV2_AZURE_50:The datastore account keeps public network access (no VNet here); public blob access is off.
  name                    = "mlw-${local.prefix}"
  resource_group_name     = azurerm_resource_group.main.name
  location                = azurerm_resource_group.main.location
  application_insights_id = azurerm_application_insights.main.id
  key_vault_id            = azurerm_key_vault.main.id
  storage_account_id      = azurerm_storage_account.datastore.id
  container_registry_id   = azurerm_container_registry.main.id
  # The account allows no shared key: the workspace reaches its own system storage by identity too.
  storage_account_access_type = "Identity"
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
