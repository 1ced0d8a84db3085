# Ingest topic -> worker subscription (retry + dead letter) -> DLQ topic/subscription.
# A second subscription copies every message into BigQuery (see bigquery.tf).

resource "google_pubsub_topic" "ingest" {
  #checkov:skip=CKV_GCP_83:Messages are encrypted with Google-managed keys; CMEK is not required for this data class.
  project                    = var.project_id
  name                       = local.ingest_topic_name
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Messages are encrypted with Google-managed keys; CMEK is not required for this data class.
  project                    = var.project_id
  name                       = "${local.name}-dead-letter"
  labels                     = local.labels
  message_retention_duration = var.message_retention_duration

  depends_on = [google_project_service.this]
}

resource "google_pubsub_subscription" "worker" {
  project = var.project_id
  name    = local.worker_subscription_name
  topic   = google_pubsub_topic.ingest.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = false
  enable_message_ordering    = false

  expiration_policy {
    ttl = "" # never expires, even when the worker is idle
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  dynamic "push_config" {
    for_each = var.worker_delivery == "push" ? [1] : []

    content {
      push_endpoint = "${google_cloud_run_v2_service.worker.uri}/v1/pubsub/push"

      oidc_token {
        service_account_email = google_service_account.push[0].email
        audience              = local.push_audience
      }
    }
  }
}

resource "google_pubsub_subscription" "dead_letter" {
  project = var.project_id
  name    = "${local.name}-dead-letter"
  topic   = google_pubsub_topic.dead_letter.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention_duration

  expiration_policy {
    ttl = ""
  }
}

# --- IAM of the application identities, on the individual resources ---

resource "google_pubsub_topic_iam_member" "api_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.ingest.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.api.member
}

resource "google_pubsub_topic_iam_member" "api_viewer" {
  project = var.project_id
  topic   = google_pubsub_topic.ingest.name
  role    = "roles/pubsub.viewer" # /readyz checks the topic exists
  member  = google_service_account.api.member
}

resource "google_pubsub_subscription_iam_member" "worker_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.worker.name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.worker.member
}

# The worker dead-letters permanent failures itself and replays dead letters on request.
resource "google_pubsub_topic_iam_member" "worker_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.worker.member
}

resource "google_pubsub_subscription_iam_member" "worker_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.dead_letter.name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.worker.member
}

resource "google_pubsub_topic_iam_member" "worker_replay_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.ingest.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.worker.member
}

# The API serves /v1/dead-letters straight from the dead-letter subscription: list and show
# pull it (Pull, then ModifyAckDeadline 0 to hand the leases back), purge and replay
# acknowledge on it (replay publishes to the ingest topic first: api_publisher).
resource "google_pubsub_subscription_iam_member" "api_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.dead_letter.name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.api.member
}

# The worker checks its broker with GetTopic on the ingest topic every few seconds
# (latam_dependency_up, and /readyz in push mode); publisher and subscriber roles lack
# pubsub.topics.get, so without this the worker reports Pub/Sub down while it works.
resource "google_pubsub_topic_iam_member" "worker_viewer" {
  project = var.project_id
  topic   = google_pubsub_topic.ingest.name
  role    = "roles/pubsub.viewer"
  member  = google_service_account.worker.member
}

# --- IAM the Pub/Sub service agent needs ---

# Forward undeliverable messages to the dead-letter topic ...
resource "google_pubsub_topic_iam_member" "agent_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

# ... and acknowledge them on the source subscription.
resource "google_pubsub_subscription_iam_member" "agent_source_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.worker.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# Push delivery: the agent mints OIDC tokens as the push identity, which may invoke the worker.
resource "google_service_account_iam_member" "agent_push_token_creator" {
  count = var.worker_delivery == "push" ? 1 : 0

  service_account_id = google_service_account.push[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  count = var.worker_delivery == "push" ? 1 : 0

  project  = var.project_id
  location = google_cloud_run_v2_service.worker.location
  name     = google_cloud_run_v2_service.worker.name
  role     = "roles/run.invoker"
  member   = google_service_account.push[0].member
}
