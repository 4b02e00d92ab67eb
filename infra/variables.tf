variable "subscription_id" {
  description = "Azure subscription that receives every resource."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.subscription_id))
    error_message = "subscription_id must be a subscription GUID."
  }
}

variable "name" {
  description = "Short name of this deployment, used in every resource name (3-11 lower-case letters or digits)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,10}$", var.name))
    error_message = "name must be 3-11 lower-case letters or digits, starting with a letter."
  }
}

variable "location" {
  description = "Azure region of the deployment."
  type        = string
  default     = "westeurope"
}

variable "datastore_container" {
  description = "Container of the datastore (STORAGE_ACCOUNT_CONTAINER_NAME)."
  type        = string
  default     = "data"
}

variable "image_folder" {
  description = "Folder of images in the container (IMAGE_FOLDER); new images under it trigger retraining."
  type        = string
  default     = "data/images"
}

variable "label_folder" {
  description = "Folder of .npy labels and their JSONL (LABEL_FOLDER)."
  type        = string
  default     = "data/labels"
}

variable "cpu_vm_size" {
  description = "VM size of the CPU cluster (PIPELINE_CPU_COMPUTE_NAME)."
  type        = string
  default     = "Standard_DS3_v2"
}

variable "cpu_max_nodes" {
  description = "Largest size of the CPU cluster."
  type        = number
  default     = 2
  validation {
    condition     = var.cpu_max_nodes >= 1 && var.cpu_max_nodes <= 100
    error_message = "cpu_max_nodes must be between 1 and 100."
  }
}

variable "gpu_vm_size" {
  description = "VM size of the GPU cluster for AutoML training (TRAINING_GPU_COMPUTE_NAME). A size AutoML for Images supports; request its quota first. (Standard_NC6s_v3 was retired on 30 September 2025.)"
  type        = string
  default     = "Standard_NC4as_T4_v3"
  validation {
    condition     = !contains(["Standard_NC6", "Standard_NC12", "Standard_NC24", "Standard_NC6s_v3", "Standard_NC12s_v3", "Standard_NC24s_v3", "Standard_NC6s_v2"], var.gpu_vm_size)
    error_message = "gpu_vm_size names a retired GPU size; use a current one such as Standard_NC4as_T4_v3."
  }
}

variable "gpu_max_nodes" {
  description = "Largest size of the GPU cluster (AutoML runs TRAINING_CONCURRENT_TRIALS trials at once)."
  type        = number
  default     = 4
  validation {
    condition     = var.gpu_max_nodes >= 1 && var.gpu_max_nodes <= 100
    error_message = "gpu_max_nodes must be between 1 and 100."
  }
}

variable "retrain_min_new_images" {
  description = "Pending images that make a retraining batch (RETRAIN_MIN_NEW_IMAGES)."
  type        = number
  default     = 50
  validation {
    condition     = var.retrain_min_new_images >= 1
    error_message = "retrain_min_new_images must be at least 1."
  }
}

variable "monitor_schedule" {
  description = "NCRONTAB schedule of the monitor timer (MONITOR_SCHEDULE)."
  type        = string
  default     = "0 */5 * * * *"
}

variable "label_map_blob" {
  description = "Blob holding the class-id to name map (LABEL_MAP_BLOB)."
  type        = string
  default     = "data/label_map.json"
}

variable "data_store_name" {
  description = "Azure ML datastore registered over the datastore container (DATA_STORE_NAME)."
  type        = string
  default     = "retraining_data"
}

variable "event_subscriptions" {
  description = "Create the Event Grid subscriptions that deliver to the function app. They must come after the code is published (Event Grid validates a function destination, and the blob trigger's key exists only once the host has started): infra/deploy.sh sets this false until then."
  type        = bool
  default     = true
}

variable "function_maximum_instances" {
  description = "Most instances the Flex Consumption function app scales out to."
  type        = number
  default     = 40
  validation {
    condition     = var.function_maximum_instances >= 1 && var.function_maximum_instances <= 1000
    error_message = "function_maximum_instances must be between 1 and 1000."
  }
}

variable "retrain_max_forced_runs" {
  description = "Runs that POST /api/runs with force may start beyond the active limit (RETRAIN_MAX_FORCED_RUNS)."
  type        = number
  default     = 1
}

variable "serving_endpoint_name" {
  description = "Managed online endpoint that serves the champion (SERVING_ENDPOINT_NAME; 3-32 letters, digits, hyphens, unique in the region). Null, the default: nothing is served on Azure ML."
  type        = string
  default     = null
  validation {
    condition     = var.serving_endpoint_name == null || can(regex("^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$", var.serving_endpoint_name))
    error_message = "serving_endpoint_name must be 3-32 letters, digits or hyphens, starting with a letter."
  }
}

variable "serving_instance_type" {
  description = "VM size of the endpoint's deployments (SERVING_INSTANCE_TYPE): CPU by default, as Microsoft's AutoML object detection sample."
  type        = string
  default     = "Standard_DS3_v2"
}

variable "serving_instance_count" {
  description = "Instances of each deployment (SERVING_INSTANCE_COUNT); Azure ML reserves 20% more quota for upgrades."
  type        = number
  default     = 1
  validation {
    condition     = var.serving_instance_count >= 1 && var.serving_instance_count <= 20
    error_message = "serving_instance_count must be between 1 and 20."
  }
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { service = "pid-symbol-retraining" }
}

variable "deployer_principal_id" {
  description = "Object id of the identity that deploys and loads data (a CI service principal); default: whoever runs terraform."
  type        = string
  default     = null
}

variable "workspace_storage_keyless" {
  description = "Key-disabled workspace storage (Azure ML preview, default); false gives the workspace a key-based account of its own."
  type        = bool
  default     = true
}
