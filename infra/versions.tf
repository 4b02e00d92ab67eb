terraform {
  required_version = ">= 1.6"
  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.9 brings storage_account_id on containers; 5.x changes resources this configuration uses.
      version = ">= 4.9, < 5.0"
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
