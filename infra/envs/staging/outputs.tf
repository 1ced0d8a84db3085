output "api_url" {
  description = "HTTPS URL of the API."
  value       = module.latam.api_url
}

output "api_service" {
  description = "Cloud Run service of the API."
  value       = module.latam.api_service
}

output "worker_service" {
  description = "Cloud Run service of the worker."
  value       = module.latam.worker_service
}

output "canary_service" {
  description = "Cloud Run service of the synthetic canary."
  value       = module.latam.canary_service
}

output "migrate_job" {
  description = "Cloud Run job of the migrations."
  value       = module.latam.migrate_job
}

output "artifact_registry_repository" {
  description = "Docker repository for images."
  value       = module.latam.artifact_registry_repository
}

output "service_accounts" {
  description = "Service account e-mails (builder, deployer and planner go into GitHub variables)."
  value       = module.latam.service_accounts
}

output "workload_identity_provider" {
  description = "WIF provider name (goes into the GitHub environment)."
  value       = module.latam.workload_identity_provider
}

output "cloudsql_connection_name" {
  description = "Cloud SQL connection name."
  value       = module.latam.cloudsql_connection_name
}

output "pubsub" {
  description = "Pub/Sub names."
  value       = module.latam.pubsub
}

output "bigquery_table" {
  description = "Analytics table."
  value       = module.latam.bigquery_table
}

output "api_token_secret" {
  description = "Secret holding the API key."
  value       = module.latam.api_token_secret
}

output "binauthz_attestor" {
  description = "Attestor the build job signs for (GitHub variable BINAUTHZ_ATTESTOR)."
  value       = module.latam.binauthz_attestor
}

output "binauthz_key_version" {
  description = "KMS key version that signs (GitHub variable BINAUTHZ_KEY_VERSION)."
  value       = module.latam.binauthz_key_version
}
