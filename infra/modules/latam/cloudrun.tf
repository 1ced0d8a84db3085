# Two Cloud Run services from one image: the HTTP API and the worker. Each runs a Managed
# Service for Prometheus sidecar that scrapes /metrics on port 8080 of the app container.

locals {
  common_env = {
    LATAM_ENVIRONMENT       = var.environment
    LATAM_LOG_FORMAT        = "json"
    LATAM_LOG_LEVEL         = "INFO"
    LATAM_BROKER_URL        = local.broker_url
    LATAM_CLOUDSQL_INSTANCE = google_sql_database_instance.main.connection_name
    # The instance has a public address only (connector-only, see database.tf); the app's
    # default is PRIVATE, so without this the connector dials an address that does not exist.
    LATAM_CLOUDSQL_IP_TYPE                = "PUBLIC"
    LATAM_PUBSUB_DEAD_LETTER_TOPIC        = google_pubsub_topic.dead_letter.name
    LATAM_PUBSUB_DEAD_LETTER_SUBSCRIPTION = google_pubsub_subscription.dead_letter.name
    LATAM_MAX_DELIVERY_ATTEMPTS           = tostring(var.max_delivery_attempts)
    LATAM_DB_POOL_SIZE                    = "5"
    LATAM_DB_MAX_OVERFLOW                 = "5"
    # Log lines carry logging.googleapis.com/trace (joined to their request) only with it.
    LATAM_GCP_PROJECT = var.project_id
    # Keys required whatever the bind address ("auto" is on at 0.0.0.0 too; this does not drift).
    LATAM_AUTH = "on"
    # Cloud Run's front end connects from a link-local address and names the client in
    # X-Forwarded-For. Trusting only it and loopback (the metrics sidecar) gives per-address
    # limits the real client; a forged X-Forwarded-For cannot pass for loopback on /metrics.
    LATAM_FORWARDED_ALLOW_IPS = "127.0.0.1,169.254.0.0/16"
    # Cloud Run sends SIGKILL 10 s after SIGTERM: settle the batch in hand and exit first.
    LATAM_SHUTDOWN_TIMEOUT_SECONDS = "8"
  }

  # Push: the audience the worker compares with the token's `aud` is the very string the
  # subscription asks Pub/Sub to put there (local.push_audience, pubsub.tf), so they cannot drift.
  push_env = var.worker_delivery == "push" ? {
    LATAM_PUBSUB_PUSH_SERVICE_ACCOUNT = google_service_account.push[0].email
    LATAM_PUBSUB_PUSH_AUDIENCE        = local.push_audience
  } : {}

  # Environment variable => Secret Manager secret it is read from.
  api_secret_env = {
    LATAM_BOOTSTRAP_API_KEY = google_secret_manager_secret.this["api-token"].secret_id
    LATAM_DATABASE_URL      = google_secret_manager_secret.this["api-database-url"].secret_id
  }

  worker_secret_env = {
    LATAM_DATABASE_URL = google_secret_manager_secret.this["worker-database-url"].secret_id
  }
}

resource "google_cloud_run_v2_service" "api" {
  project             = var.project_id
  name                = "${local.name}-api"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = false
  labels              = local.labels

  # Only images the pipeline attested (binauthz.tf) are admitted.
  binary_authorization {
    use_default = true
  }

  template {
    service_account                  = google_service_account.api.email
    max_instance_request_concurrency = var.api_concurrency
    timeout                          = "60s"
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    labels                           = local.labels

    scaling {
      min_instance_count = var.api_min_instances
      max_instance_count = var.api_max_instances
    }

    containers {
      name  = "api"
      image = local.image
      args  = ["api"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.api_cpu
          memory = var.api_memory
        }
        # Instance-based billing keeps CPU for the metrics sidecar's scrapes between requests.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.common_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # One API process per vCPU of the instance (the container sees the host's CPUs).
      env {
        name  = "LATAM_API_WORKERS"
        value = tostring(max(1, floor(tonumber(var.api_cpu))))
      }

      dynamic "env" {
        for_each = local.api_secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
          port = 8080
        }
        initial_delay_seconds = 0
        period_seconds        = 2
        timeout_seconds       = 1
        failure_threshold     = 30
      }

      liveness_probe {
        http_get {
          path = "/healthz"
          port = 8080
        }
        period_seconds    = 15
        timeout_seconds   = 3
        failure_threshold = 3
      }
    }

    containers {
      name       = "prometheus-collector"
      image      = var.gmp_sidecar_image
      depends_on = ["api"]

      resources {
        limits = {
          cpu    = "1"
          memory = "256Mi"
        }
        cpu_idle = false
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  # Revisions, images and traffic splits are rolled out by the deploy pipeline (canary);
  # Terraform owns the rest of the service.
  lifecycle {
    ignore_changes = [
      template[0].containers[0].image,
      template[0].revision,
      traffic,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_project_service.this,
    google_secret_manager_secret_iam_member.readers,
    google_secret_manager_secret_version.this,
    google_secret_manager_secret_version.api_token,
  ]
}

resource "google_cloud_run_v2_service" "worker" {
  project             = var.project_id
  name                = "${local.name}-worker"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = false
  labels              = local.labels

  # Only images the pipeline attested (binauthz.tf) are admitted.
  binary_authorization {
    use_default = true
  }

  template {
    service_account                  = google_service_account.worker.email
    max_instance_request_concurrency = var.worker_delivery == "push" ? 50 : 10
    timeout                          = "300s"
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    labels                           = local.labels

    scaling {
      min_instance_count = var.worker_min_instances
      max_instance_count = var.worker_max_instances
    }

    containers {
      name  = "worker"
      image = local.image
      # Pull: the streaming-pull consumer. Push: the HTTP app receiving /v1/pubsub/push.
      args = var.worker_delivery == "push" ? ["api"] : ["worker"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.worker_cpu
          memory = var.worker_memory
        }
        # A pull consumer works between requests, so its CPU is always allocated.
        cpu_idle          = var.worker_delivery == "push"
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = merge(local.common_env, local.push_env)
        content {
          name  = env.key
          value = env.value
        }
      }

      # Push mode runs `latam api` here: one API process per vCPU, as on the API service
      # (unset, it would start one per CPU the container sees, up to 4). Pull mode ignores it.
      env {
        name  = "LATAM_API_WORKERS"
        value = tostring(max(1, floor(tonumber(var.worker_cpu))))
      }

      dynamic "env" {
        for_each = local.worker_secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
          port = 8080
        }
        period_seconds    = 2
        timeout_seconds   = 1
        failure_threshold = 30
      }

      liveness_probe {
        http_get {
          path = "/healthz"
          port = 8080
        }
        period_seconds    = 15
        timeout_seconds   = 3
        failure_threshold = 3
      }
    }

    containers {
      name       = "prometheus-collector"
      image      = var.gmp_sidecar_image
      depends_on = ["worker"]

      resources {
        limits = {
          cpu    = "1"
          memory = "256Mi"
        }
        cpu_idle = var.worker_delivery == "push"
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    ignore_changes = [
      template[0].containers[0].image,
      template[0].revision,
      traffic,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_project_service.this,
    google_secret_manager_secret_iam_member.readers,
    google_secret_manager_secret_version.this,
    google_secret_manager_secret_version.api_token,
  ]
}

# API access: public (the API still checks its key) or IAM-only.
resource "google_cloud_run_v2_service_iam_member" "api_public" {
  count = var.api_public ? 1 : 0

  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "api_invokers" {
  for_each = var.api_public ? toset([]) : toset(var.api_invokers)

  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = each.value
}

# The pipeline's post-deploy smoke test calls the (possibly IAM-only) canary revision.
resource "google_cloud_run_v2_service_iam_member" "deployer_invoker" {
  count = var.api_public ? 0 : 1

  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = google_service_account.deployer.member
}

# Schema migrations (`latam migrate`, idempotent) run as a job before each rollout, as the
# worker identity, which owns the schema.
resource "google_cloud_run_v2_job" "migrate" {
  project             = var.project_id
  name                = "${local.name}-migrate"
  location            = var.region
  deletion_protection = false
  labels              = local.labels

  binary_authorization {
    use_default = true
  }

  template {
    task_count = 1

    template {
      service_account = google_service_account.worker.email
      timeout         = "600s"
      max_retries     = 1

      containers {
        image = local.image
        args  = ["migrate"]

        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }

        dynamic "env" {
          for_each = local.common_env
          content {
            name  = env.key
            value = env.value
          }
        }

        env {
          name = "LATAM_DATABASE_URL"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.this["worker-database-url"].secret_id
              version = "latest"
            }
          }
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [
      template[0].template[0].containers[0].image,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_project_service.this,
    google_secret_manager_secret_iam_member.readers,
    google_secret_manager_secret_version.this,
    google_secret_manager_secret_version.api_token,
  ]
}
