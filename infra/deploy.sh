#!/usr/bin/env bash
# Staged deployment, in the order that works. Every stage is idempotent: run them all, or one again.
#
#   infra/deploy.sh [all|resources|code|subscriptions]        (make deploy runs all)
#
# 1. resources      terraform apply without the Event Grid subscriptions that deliver to the function
#                   app (kept when they already exist, so a re-run never removes them), then check the
#                   workspace identity's roles on its storage and create the missing ones
# 2. code           wait until the deployer's data roles are in force, register the pipeline's
#                   environment and components for this release, wait for the app's role on its host
#                   storage, publish the function app (Core Tools; retried, bounded), then wake the host
#                   until its blobs extension key exists. Components come first: the published app's
#                   timer and events submit pipelines that reference them.
# 3. subscriptions  terraform apply with the subscriptions: Event Grid validates a function destination
#                   at creation, and the blob trigger's webhook needs that key
#
# After every apply the AzureWebJobsStorage connection string that azurerm writes into a Flex app (with
# an empty key, even with identity storage; provider issues #29693, #30732) is deleted, and its absence
# checked: the host would prefer it to AzureWebJobsStorage__accountName and fail on keyless storage.
#
# Needs: terraform, az (logged in: `az login`), func (Azure Functions Core Tools), and `make setup`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
stage="${1:-all}"
wait_seconds="${DEPLOY_HOST_WAIT_SECONDS:-10}"
wait_attempts="${DEPLOY_HOST_WAIT_ATTEMPTS:-30}"
role_wait_attempts="${DEPLOY_ROLE_WAIT_ATTEMPTS:-30}"
publish_attempts="${DEPLOY_PUBLISH_ATTEMPTS:-5}"
publish_wait_seconds="${DEPLOY_PUBLISH_WAIT_SECONDS:-60}"
retrain="${RETRAIN:-$root/.venv/bin/retrain}"
release_file="${DEPLOY_RELEASE_FILE:-$root/retrainer/assembly/RELEASE}"

say() { printf '[deploy] %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { say "$1 is not installed: $2"; exit 2; }; }
output() { terraform -chdir="$here" output -raw "$1"; }

resources() {
  need terraform "https://developer.hashicorp.com/terraform/install"
  terraform -chdir="$here" init -input=false
  local keep=false
  if terraform -chdir="$here" state list 2>/dev/null | grep -q 'azurerm_eventgrid_system_topic_event_subscription'; then
    keep=true
  fi
  say "stage 1/3: resources (event_subscriptions=$keep)"
  terraform -chdir="$here" apply -input=false -auto-approve -var "event_subscriptions=$keep"
  keyless_host_storage
  workspace_storage_roles
  workspace_registry_and_vault_roles
  cluster_image_pull_roles
}

# azurerm re-adds AzureWebJobsStorage on every apply: delete it, then check it is gone.
keyless_host_storage() {
  need az "install the Azure CLI and run az login"
  local app group
  app="$(output function_app_name)"
  group="$(output resource_group)"
  az functionapp config appsettings delete --resource-group "$group" --name "$app" \
    --setting-names AzureWebJobsStorage --output none
  if [ -n "$(az functionapp config appsettings list --resource-group "$group" --name "$app" \
    --query "[?name=='AzureWebJobsStorage'].name" --output tsv)" ]; then
    say "AzureWebJobsStorage is still set on $app: the host would use it instead of its identity"
    exit 1
  fi
  say "host storage is keyless: AzureWebJobsStorage removed, AzureWebJobsStorage__accountName in use"
}

# True when the principal holds the role at exactly this scope. Filtering on principalId instead of
# --assignee needs no Microsoft Graph lookup, which a CI identity is often not allowed to make.
has_role() {
  local principal="$1" role="$2" scope="$3"
  [ -n "$(az role assignment list --scope "$scope" --role "$role" \
    --query "[?principalId=='$principal'].id" --output tsv)" ]
}

# Create the assignment unless it exists. A duplicate is answered with 409 RoleAssignmentExists (the
# CLI passes it on depending on which ARM region answers, azure-cli #31995): then Azure ML created it
# between our check and our create, and the role is in place, which is all this wants.
ensure_role() {
  local principal="$1" role="$2" scope="$3" error
  if has_role "$principal" "$role" "$scope"; then
    say "$role: already assigned"
    return 0
  fi
  if error="$(az role assignment create --assignee-object-id "$principal" \
    --assignee-principal-type ServicePrincipal --role "$role" --scope "$scope" --output none 2>&1)"; then
    say "$role: assigned"
  elif grep -qE 'RoleAssignmentExists|role assignment already exists' <<<"$error"; then
    say "$role: already assigned (created meanwhile)"
  else
    printf '%s\n' "$error" >&2
    say "could not assign $role on $scope to $principal; check the deployer's rights, then run: infra/deploy.sh resources"
    exit 1
  fi
}

# The workspace reaches its key-disabled storage by its own identity. The docs describe Azure ML
# creating these two roles only for a workspace created in the portal; Terraform creates it through
# ARM, and declaring them in Terraform fails with 409 where Azure ML did create them. So: check after
# stage 1's apply, create what is missing. Key-based workspace storage (empty output) needs neither.
workspace_storage_roles() {
  local principal scope role
  scope="$(output workspace_identity_storage_id)"
  if [ -z "$scope" ]; then
    say "the workspace reaches its storage by key: no identity roles to check"
    return 0
  fi
  principal="$(output ml_workspace_principal_id)"
  for role in "Storage Blob Data Contributor" "Storage File Data Privileged Contributor"; do
    ensure_role "$principal" "$role" "$scope"
  done
}

# The workspace's identity builds the steps' images into the registry and reads the workspace's secrets from
# the RBAC key vault: the roles the docs list for a workspace identity (Contributor on the registry, Key Vault
# Administrator on an RBAC vault), which the provider creates for a portal workspace. Checked like storage.
workspace_registry_and_vault_roles() {
  local principal
  principal="$(output ml_workspace_principal_id)"
  ensure_role "$principal" "Contributor" "$(output container_registry_id)"
  ensure_role "$principal" "Key Vault Administrator" "$(output key_vault_id)"
}

# The clusters' system-assigned identities pull the images by the documented path: Azure ML grants them AcrPull
# on the workspace registry itself. Checked after every apply, and granted where it is missing (infra/ml.tf).
cluster_image_pull_roles() {
  local principal registry
  registry="$(output container_registry_id)"
  for principal in $(output compute_system_principal_ids); do
    ensure_role "$principal" "AcrPull" "$registry"
  done
}

# One release per deployed commit: the app ships it and the components are registered under it, so a
# submission always references the components of the code that submits it (never an older 0.1.0).
write_release() {
  local version commit
  version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -1)"
  commit="$(git -C "$root" rev-parse --short=8 HEAD)"
  if [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]; then
    commit="$commit-dirty$(date +%s)"  # uncommitted changes: never reuse the commit's release
  fi
  printf '%s-%s\n' "$version" "$commit" > "$release_file"
}

# Role assignments take minutes to reach the data plane: wait (bounded) until the deployer can list
# the datastore with its token, or `retrain register-components` would fail halfway.
wait_for_data_roles() {
  local account container attempt
  account="$(output datastore_account)"
  container="$(output datastore_container)"
  for attempt in $(seq 1 "$role_wait_attempts"); do
    if az storage blob list --account-name "$account" --container-name "$container" --auth-mode login \
      --num-results 1 --output none 2>/dev/null; then
      say "the deployer's data roles are in force"
      return 0
    fi
    say "waiting for role assignments to propagate ($attempt/$role_wait_attempts)"
    sleep "$wait_seconds"
  done
  say "the deployer still cannot read $account/$container; check its role assignments, then run: infra/deploy.sh code"
  exit 1
}

# Flex Consumption stores the published package in the host storage's deployment container with the
# app's own identity, and the host runs on that storage too: without the app's role there, publishing
# fails. The deployer cannot test the app's data access, so it waits (bounded) until the assignment
# exists, and publish() retries while it propagates to the data plane.
wait_for_app_role() {
  local principal scope attempt
  principal="$(output function_app_principal_id)"
  scope="$(output function_storage_id)"
  for attempt in $(seq 1 "$role_wait_attempts"); do
    if has_role "$principal" "Storage Blob Data Owner" "$scope"; then
      say "the app's role on its host storage exists"
      return 0
    fi
    say "waiting for the app's role on its host storage ($attempt/$role_wait_attempts)"
    sleep "$wait_seconds"
  done
  say "the app has no Storage Blob Data Owner on $scope; run infra/deploy.sh resources, then: infra/deploy.sh code"
  exit 1
}

# A role assignment takes minutes to reach the data plane, and a first publish can meet a 403: retry,
# bounded, and stop with the command to run again.
publish() {
  local app="$1" attempt
  for attempt in $(seq 1 "$publish_attempts"); do
    if (cd "$root" && func azure functionapp publish "$app" --python); then
      return 0
    fi
    if [ "$attempt" -lt "$publish_attempts" ]; then
      say "publishing $app failed ($attempt/$publish_attempts); retrying in ${publish_wait_seconds}s"
      sleep "$publish_wait_seconds"
    fi
  done
  say "publishing $app failed $publish_attempts times; check the app's role on its host storage and the errors above, then run: infra/deploy.sh code"
  exit 1
}

code() {
  need func "install Azure Functions Core Tools 4.x"
  need az "install the Azure CLI and run az login"
  local app group
  app="$(output function_app_name)"
  group="$(output resource_group)"
  wait_for_data_roles
  write_release
  say "stage 2/3: registering the pipeline's environment and components (release $(cat "$release_file"))"
  (cd "$root" && AZURE_SUBSCRIPTION_ID="$(output subscription_id)" AZURE_RESOURCE_GROUP="$group" \
    AZUREML_WORKSPACE_NAME="$(output ml_workspace_name)" "$retrain" register-components)
  wait_for_app_role
  say "publishing $app (release $(cat "$release_file"))"
  publish "$app"
  local host attempt
  host="$(az functionapp show --resource-group "$group" --name "$app" --query defaultHostName --output tsv)"
  for attempt in $(seq 1 "$wait_attempts"); do
    if [ -n "$(az functionapp keys list --resource-group "$group" --name "$app" \
      --query systemKeys.blobs_extension --output tsv 2>/dev/null)" ]; then
      say "the host is up and its blobs extension key exists"
      return 0
    fi
    say "waiting for the host to start ($attempt/$wait_attempts)"
    curl --silent --output /dev/null --max-time 30 "https://$host/" || true
    sleep "$wait_seconds"
  done
  say "the blobs extension key did not appear; check the app's logs, then run: infra/deploy.sh subscriptions"
  exit 1
}

subscriptions() {
  need terraform "https://developer.hashicorp.com/terraform/install"
  say "stage 3/3: Event Grid subscriptions to the function app"
  terraform -chdir="$here" apply -input=false -auto-approve -var "event_subscriptions=true"
  keyless_host_storage
}

case "$stage" in
  all) resources; code; subscriptions; say "deployed" ;;
  resources) resources ;;
  code) code ;;
  subscriptions) subscriptions ;;
  *) say "unknown stage '$stage': use all, resources, code or subscriptions"; exit 2 ;;
esac
