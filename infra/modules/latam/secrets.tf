# Credentials live in Secret Manager; Cloud Run reads them at start-up as environment
# variables. Each runtime identity can read only the secrets it uses.

locals {
  secrets = {
    "api-token"           = { value = random_password.api_token.result, readers = ["api", "deployer"] }
    "db-admin-password"   = { value = random_password.db_admin.result, readers = [] }
    "api-database-url"    = { value = local.api_database_url, readers = ["api"] }
    "worker-database-url" = { value = local.worker_database_url, readers = ["worker"] }
  }

  secret_readers = merge([
    for name, secret in local.secrets : {
      for reader in secret.readers : "${name}/${reader}" => { secret = name, reader = reader }
    }
  ]...)

  runtime_members = {
    api    = google_service_account.api.member
    worker = google_service_account.worker.member
    # The deploy pipeline's smoke test authenticates with the API key.
    deployer = google_service_account.deployer.member
  }
}

resource "random_password" "api_token" {
  length  = 48
  special = false
}

resource "google_secret_manager_secret" "this" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = "${local.name}-${each.key}"
  labels    = local.labels

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_secret_manager_secret_version" "this" {
  for_each = local.secrets

  secret      = google_secret_manager_secret.this[each.key].id
  secret_data = each.value.value
}

resource "google_secret_manager_secret_iam_member" "readers" {
  for_each = local.secret_readers

  project   = var.project_id
  secret_id = google_secret_manager_secret.this[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.runtime_members[each.value.reader]
}
