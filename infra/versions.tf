terraform {
  required_version = ">= 1.6"
  # The state holds the function app's host keys (data.azurerm_function_app_host_keys): keep it in a
  # blob container reached with Entra ID, never on a laptop. The account, container and key are given
  # at `terraform init -backend-config=backend.hcl` (see backend.hcl.sample and docs/deployment.md).
  backend "azurerm" {
    use_azuread_auth = true
  }
  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.77 is the first release with every argument used here (storage_account_access_type on the
      # workspace; Flex Consumption came in 4.21, identity-based datastores in 4.36); 5.x changes resources.
      version = ">= 4.77, < 5.0"
    }
  }
}

provider "azurerm" {
  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }
    storage {
      # With storage_use_azuread, azurerm 4.x otherwise reads queue and static-website properties
      # through the data plane, which needs data roles the deployer usually lacks (403 on apply).
      data_plane_available = false
    }
  }
  subscription_id     = var.subscription_id
  storage_use_azuread = true
}
