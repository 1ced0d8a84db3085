# Analytics copy: a BigQuery subscription on the ingest topic writes every message, as
# published, into a day-partitioned table. It is independent of the worker and its store.

resource "google_bigquery_dataset" "analytics" {
  #checkov:skip=CKV_GCP_81:Data is encrypted with Google-managed keys; CMEK is not required for this data class.
  project                    = var.project_id
  dataset_id                 = replace("${local.name}_analytics", "-", "_")
  friendly_name              = "latam analytics (${var.environment})"
  description                = "Raw copy of every message published to the latam ingest topic."
  location                   = var.bigquery_location
  delete_contents_on_destroy = false
  labels                     = local.labels

  depends_on = [google_project_service.this]
}

resource "google_bigquery_table" "messages" {
  #checkov:skip=CKV_GCP_80:Data is encrypted with Google-managed keys; CMEK is not required for this data class.
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.analytics.dataset_id
  table_id            = "messages"
  description         = "Pub/Sub messages of the ingest topic (BigQuery subscription, write_metadata)."
  deletion_protection = true
  labels              = local.labels

  time_partitioning {
    type          = "DAY"
    field         = "publish_time"
    expiration_ms = var.bigquery_partition_expiration_days > 0 ? var.bigquery_partition_expiration_days * 86400000 : null
  }

  require_partition_filter = true
  clustering               = ["subscription_name"]

  # Column names and types are the ones a BigQuery subscription with write_metadata writes.
  schema = jsonencode([
    { name = "subscription_name", type = "STRING", mode = "NULLABLE", description = "Subscription that wrote the row" },
    { name = "message_id", type = "STRING", mode = "NULLABLE", description = "Pub/Sub message id" },
    { name = "publish_time", type = "TIMESTAMP", mode = "NULLABLE", description = "Time Pub/Sub accepted the message" },
    { name = "data", type = "JSON", mode = "NULLABLE", description = "Message body (the JSON data object)" },
    { name = "attributes", type = "JSON", mode = "NULLABLE", description = "Message attributes (topic, message_id, published_at)" },
  ])
}

# The Pub/Sub service agent writes into the table.
resource "google_bigquery_table_iam_member" "agent_editor" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.analytics.dataset_id
  table_id   = google_bigquery_table.messages.table_id
  role       = "roles/bigquery.dataEditor"
  member     = local.pubsub_agent
}

resource "google_pubsub_subscription" "bigquery" {
  project = var.project_id
  name    = "${local.name}-bigquery"
  topic   = google_pubsub_topic.ingest.id
  labels  = local.labels

  message_retention_duration = var.message_retention_duration

  expiration_policy {
    ttl = ""
  }

  bigquery_config {
    table               = "${var.project_id}.${google_bigquery_dataset.analytics.dataset_id}.${google_bigquery_table.messages.table_id}"
    write_metadata      = true
    use_topic_schema    = false
    drop_unknown_fields = false
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  depends_on = [google_bigquery_table_iam_member.agent_editor]
}

resource "google_pubsub_subscription_iam_member" "agent_bigquery_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.bigquery.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
