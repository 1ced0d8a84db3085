locals {
  name = "${var.name_prefix}-${var.environment}"

  labels = merge(var.labels, {
    app         = var.name_prefix
    environment = var.environment
    managed-by  = "terraform"
  })

  # Until the pipeline pushes the first image, Cloud Run runs Google's sample container.
  image = var.image != "" ? var.image : "us-docker.pkg.dev/cloudrun/container/hello"

  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  # Signs the OIDC token of authenticated uptime checks (and publishes to Pub/Sub channels).
  monitoring_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com"

  # IAM database users are the service-account e-mails without ".gserviceaccount.com".
  api_db_user    = trimsuffix(google_service_account.api.email, ".gserviceaccount.com")
  worker_db_user = trimsuffix(google_service_account.worker.email, ".gserviceaccount.com")
  db_name        = "latam"

  # The Cloud SQL Python Connector (LATAM_CLOUDSQL_INSTANCE) dials the instance; host is unused.
  api_database_url    = "postgresql://${urlencode(local.api_db_user)}@/${local.db_name}"
  worker_database_url = "postgresql://${urlencode(local.worker_db_user)}@/${local.db_name}"

  # Built from names, not resource references: in push mode the subscription points at the worker.
  ingest_topic_name        = "${local.name}-ingest"
  worker_subscription_name = "${local.name}-worker"
  broker_url               = "pubsub://${var.project_id}/${local.ingest_topic_name}?subscription=${local.worker_subscription_name}"

  # Push delivery: the OIDC audience Pub/Sub puts in its token and the worker checks. The
  # deterministic URL (SERVICE-PROJECT_NUMBER.REGION.run.app) is known before the service
  # exists, unlike the hash-style `uri` attribute; both reach the same service.
  push_audience = "https://${local.name}-worker-${data.google_project.this.number}.${var.region}.run.app"

  # The synthetic canary's topic: the canary service publishes to it (`latam canary
  # --topic`), the API's status page reads its history (LATAM_CANARY_TOPIC).
  canary_topic = "latam-canary"

  google_apis = [
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "binaryauthorization.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "containeranalysis.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "serviceusage.googleapis.com",
    "sqladmin.googleapis.com",
    "sts.googleapis.com",
    "telemetry.googleapis.com", # the traces sidecar writes spans to the Telemetry (OTLP) API
  ]
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "this" {
  for_each = toset(local.google_apis)

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
