output "api_url" {
  description = "HTTPS URL of the API service."
  value       = google_cloud_run_v2_service.api.uri
}

output "api_service" {
  description = "Cloud Run service name of the API."
  value       = google_cloud_run_v2_service.api.name
}

output "worker_service" {
  description = "Cloud Run service name of the worker."
  value       = google_cloud_run_v2_service.worker.name
}

output "canary_service" {
  description = "Cloud Run service name of the synthetic canary (null when canary_enabled is false)."
  value       = var.canary_enabled ? google_cloud_run_v2_service.canary[0].name : null
}

output "migrate_job" {
  description = "Cloud Run job that runs the database migrations."
  value       = google_cloud_run_v2_job.migrate.name
}

output "artifact_registry_repository" {
  description = "Docker repository path for images (REGION-docker.pkg.dev/PROJECT/REPO)."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "service_accounts" {
  description = "E-mails of the runtime and pipeline service accounts."
  value = {
    api      = google_service_account.api.email
    worker   = google_service_account.worker.email
    builder  = google_service_account.builder.email
    deployer = google_service_account.deployer.email
    planner  = google_service_account.planner.email
    canary   = var.canary_enabled ? google_service_account.canary[0].email : null
  }
}

output "workload_identity_provider" {
  description = "Full name of the WIF provider, for google-github-actions/auth."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "cloudsql_connection_name" {
  description = "PROJECT:REGION:INSTANCE of the Cloud SQL instance (LATAM_CLOUDSQL_INSTANCE)."
  value       = google_sql_database_instance.main.connection_name
}

output "pubsub" {
  description = "Pub/Sub topic and subscription names."
  value = {
    ingest_topic             = google_pubsub_topic.ingest.name
    worker_subscription      = google_pubsub_subscription.worker.name
    dead_letter_topic        = google_pubsub_topic.dead_letter.name
    dead_letter_subscription = google_pubsub_subscription.dead_letter.name
    bigquery_subscription    = google_pubsub_subscription.bigquery.name
  }
}

output "bigquery_table" {
  description = "PROJECT.DATASET.TABLE of the analytics copy."
  value       = "${var.project_id}.${google_bigquery_dataset.analytics.dataset_id}.${google_bigquery_table.messages.table_id}"
}

output "api_token_secret" {
  description = "Secret Manager secret holding the API key (read it with gcloud, never print it in CI)."
  value       = google_secret_manager_secret.this["api-token"].secret_id
}

output "binauthz_attestor" {
  description = "Binary Authorization attestor the build job signs for (BINAUTHZ_ATTESTOR)."
  value       = google_binary_authorization_attestor.built_by_ci.id
}

output "binauthz_key_version" {
  description = "KMS key version that signs attestations (BINAUTHZ_KEY_VERSION), as the relative name gcloud's --keyversion takes."
  value       = data.google_kms_crypto_key_version.attestor.name
}
