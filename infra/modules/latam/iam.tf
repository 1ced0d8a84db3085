# Identities, each with only what its job needs. No primitive roles, no keys: api, worker
# (runtime); canary (the synthetic canary, var.canary_enabled); builder (push and sign
# images, no deploy rights), deployer (roll out revisions); planner (wif.tf, read-only plans
# of pull requests); push (push mode only).

resource "google_service_account" "api" {
  project      = var.project_id
  account_id   = "${local.name}-api"
  display_name = "latam API (${var.environment})"
}

resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "${local.name}-worker"
  display_name = "latam worker (${var.environment})"
}

resource "google_service_account" "canary" {
  count = var.canary_enabled ? 1 : 0

  project      = var.project_id
  account_id   = "${local.name}-canary"
  display_name = "latam synthetic canary (${var.environment})"
}

resource "google_service_account" "deployer" {
  project      = var.project_id
  account_id   = "${local.name}-deployer"
  display_name = "latam deployer: GitHub Actions pushes images and rolls out Cloud Run (${var.environment})"
}

resource "google_service_account" "builder" {
  project      = var.project_id
  account_id   = "${local.name}-builder"
  display_name = "latam builder: GitHub Actions pushes, scans and signs images (${var.environment})"
}

resource "google_service_account" "push" {
  count = var.worker_delivery == "push" ? 1 : 0

  project      = var.project_id
  account_id   = "${local.name}-push"
  display_name = "latam Pub/Sub push identity (${var.environment})"
}

# Project-level roles that have no narrower resource to bind to.
locals {
  runtime_project_roles = [
    "roles/cloudsql.client",       # connect through the Cloud SQL connector
    "roles/cloudsql.instanceUser", # log in with IAM database authentication
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter", # Managed Prometheus sidecar writes metrics
    # The traces sidecar writes spans to the Telemetry API (telemetry.traces.write only;
    # roles/cloudtrace.agent would add the legacy Cloud Trace API, which nothing here calls).
    "roles/telemetry.tracesWriter",
  ]

  # The canary only logs and has its metrics written: no database, no broker, no traces.
  canary_project_roles = [
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter", # Managed Prometheus sidecar writes metrics
  ]

  runtime_bindings = merge(
    { for role in local.runtime_project_roles : "api-${role}" => { role = role, member = google_service_account.api.member } },
    { for role in local.runtime_project_roles : "worker-${role}" => { role = role, member = google_service_account.worker.member } },
    var.canary_enabled ? { for role in local.canary_project_roles : "canary-${role}" => { role = role, member = google_service_account.canary[0].member } } : {},
  )
}

resource "google_project_iam_member" "runtime" {
  for_each = local.runtime_bindings

  project = var.project_id
  role    = each.value.role
  member  = each.value.member
}

# Deployer: create revisions and shift traffic (run.developer cannot change IAM policy).
resource "google_project_iam_member" "deployer_run" {
  project = var.project_id
  role    = "roles/run.developer"
  member  = google_service_account.deployer.member
}

# The builder pushes images; the deployer only reads them (rollout checks the provenance).
resource "google_artifact_registry_repository_iam_member" "builder_push" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.builder.member
}

# The status page reads its SLO states from Managed Prometheus's query API
# (monitoring.timeSeries.list; no narrower resource than the project holds metrics).
resource "google_project_iam_member" "api_monitoring_viewer" {
  project = var.project_id
  role    = "roles/monitoring.viewer"
  member  = google_service_account.api.member
}

# The canary bake reads the SLO metrics of the new revision (Managed Prometheus queries).
resource "google_project_iam_member" "deployer_monitoring" {
  project = var.project_id
  role    = "roles/monitoring.viewer"
  member  = google_service_account.deployer.member
}

resource "google_artifact_registry_repository_iam_member" "deployer_read" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.deployer.member
}

# Deploying a revision that runs as a service account requires actAs on that account only.
resource "google_service_account_iam_member" "deployer_act_as" {
  for_each = {
    api    = google_service_account.api.name
    worker = google_service_account.worker.name
  }

  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.deployer.member
}

# Runtime identities pull images from this repository only.
resource "google_artifact_registry_repository_iam_member" "runtime_pull" {
  for_each = merge(
    {
      api    = google_service_account.api.member
      worker = google_service_account.worker.member
    },
    var.canary_enabled ? { canary = google_service_account.canary[0].member } : {},
  )

  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = each.value
}

# The canary reads the API key it calls the API with (the one the API reads, secrets.tf):
# that secret only.
resource "google_secret_manager_secret_iam_member" "canary_api_key" {
  count = var.canary_enabled ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.this["api-token"].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.canary[0].member
}
