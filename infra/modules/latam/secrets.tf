# Credentials live in Secret Manager; Cloud Run reads them at start-up as environment
# variables. Each runtime identity can read only the secrets it uses. No credential is in
# the Terraform state or a plan (anyone who may plan can read those): the API key is
# generated as an ephemeral value and written write-only; the break-glass database password
# is created by a person at bootstrap (infra/README.md, step 3).

locals {
  secrets = {
    "api-token"           = { readers = ["api", "deployer"] }
    "console-secret"      = { readers = ["api"] }
    "db-admin-password"   = { readers = [] }
    "api-database-url"    = { readers = ["api"] }
    "worker-database-url" = { readers = ["worker"] }
  }

  # Values Terraform may keep: the database URLs name an IAM user and carry no password.
  plain_secret_values = {
    "api-database-url"    = local.api_database_url
    "worker-database-url" = local.worker_database_url
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

# Never stored: generated in memory for the one apply that creates the secret's version.
ephemeral "random_password" "api_token" {
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
  for_each = local.plain_secret_values

  secret      = google_secret_manager_secret.this[each.key].id
  secret_data = each.value
}

# Signs the console's session and CSRF tokens: one value for every API instance, so a
# session made on one instance is valid on the others. Rotating it signs everyone out.
ephemeral "random_password" "console_secret" {
  length  = 64
  special = false
}

resource "google_secret_manager_secret_version" "console_secret" {
  secret                 = google_secret_manager_secret.this["console-secret"].id
  secret_data_wo         = ephemeral.random_password.console_secret.result
  secret_data_wo_version = 1
}

# Write-only: the provider sends it to Secret Manager and keeps nothing. To rotate the key,
# bump secret_data_wo_version (a new version is created, and "latest" moves to it).
resource "google_secret_manager_secret_version" "api_token" {
  secret                 = google_secret_manager_secret.this["api-token"].id
  secret_data_wo         = ephemeral.random_password.api_token.result
  secret_data_wo_version = 1
}

resource "google_secret_manager_secret_iam_member" "readers" {
  for_each = local.secret_readers

  project   = var.project_id
  secret_id = google_secret_manager_secret.this[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.runtime_members[each.value.reader]
}
