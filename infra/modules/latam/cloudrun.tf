# Cloud Run services from one image: the HTTP API, the worker and the synthetic canary.
# Each runs a Managed Service for Prometheus sidecar that scrapes /metrics on port 8080 of
# its app container; the API and the worker also run the traces sidecar (tracing.tf).

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
    LATAM_CONSOLE_SECRET    = google_secret_manager_secret.this["console-secret"].secret_id
  }

  worker_secret_env = {
    LATAM_DATABASE_URL = google_secret_manager_secret.this["worker-database-url"].secret_id
  }

  # The public status page (/status, on the API): SLO states from Managed Prometheus's
  # query API for this project (roles/monitoring.viewer, iam.tf), and the history of the
  # canary's topic.
  status_env = {
    LATAM_STATUS_PROMETHEUS_URL = "https://monitoring.googleapis.com/v1/projects/${var.project_id}/location/global/prometheus"
    LATAM_CANARY_TOPIC          = local.canary_topic
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
      # Starts once the traces sidecar answers its startup probe: no early span is lost.
      depends_on = local.tracing_enabled ? ["otel-collector"] : []

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
        for_each = merge(local.common_env, local.tracing_env, local.status_env)
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

    dynamic "containers" {
      for_each = local.tracing_enabled ? [1] : []
      content {
        name  = "otel-collector"
        image = var.otel_collector_image
        args  = ["--config=env:OTELCOL_CONFIG"]

        env {
          name  = "OTELCOL_CONFIG"
          value = local.otel_collector_config
        }

        resources {
          limits = {
            cpu    = "1"
            memory = "256Mi"
          }
          cpu_idle = false
        }

        startup_probe {
          http_get {
            path = "/"
            port = local.collector_health_port
          }
          period_seconds    = 1
          timeout_seconds   = 1
          failure_threshold = 30
        }
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
      args       = var.worker_delivery == "push" ? ["api"] : ["worker"]
      depends_on = local.tracing_enabled ? ["otel-collector"] : []

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
        for_each = merge(local.common_env, local.push_env, local.tracing_env)
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

    dynamic "containers" {
      for_each = local.tracing_enabled ? [1] : []
      content {
        name  = "otel-collector"
        image = var.otel_collector_image
        args  = ["--config=env:OTELCOL_CONFIG"]

        env {
          name  = "OTELCOL_CONFIG"
          value = local.otel_collector_config
        }

        resources {
          limits = {
            cpu    = "1"
            memory = "256Mi"
          }
          cpu_idle = var.worker_delivery == "push"
        }

        startup_probe {
          http_get {
            path = "/"
            port = local.collector_health_port
          }
          period_seconds    = 1
          timeout_seconds   = 1
          failure_threshold = 30
        }
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

# The synthetic canary (`latam canary`, var.canary_enabled): one instance, always on, that
# publishes a marked message through the API every var.canary_interval_seconds and reads it
# back, exactly as a producer and a reader would (the API's URL, its IAM invoker check, its
# key). Its latam_canary_* metrics reach Managed Prometheus through the same sidecar as the
# other services', for the LatamCanaryFailing and LatamCanaryStale alerts.
resource "google_cloud_run_v2_service" "canary" {
  count = var.canary_enabled ? 1 : 0

  project  = var.project_id
  name     = "${local.name}-canary"
  location = var.region
  # Nothing calls it (it only serves /healthz and /metrics, to the platform's probes and to
  # the sidecar on localhost): internal ingress, and no invoker binding.
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = false
  labels              = local.labels

  binary_authorization {
    use_default = true
  }

  template {
    service_account                  = google_service_account.canary[0].email
    max_instance_request_concurrency = 10
    timeout                          = "30s"
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    labels                           = local.labels

    # Exactly one canary: rounds at a steady rate, one series per metric.
    scaling {
      min_instance_count = 1
      max_instance_count = 1
    }

    containers {
      name = "canary"
      # The image the API served when Terraform planned: the pipeline rolls the API and the
      # worker, and the next apply brings the canary along (it is a client of the release
      # before, which also shows the new API still serves that client).
      image = google_cloud_run_v2_service.api.template[0].containers[0].image
      args = [
        "canary",
        "--url", google_cloud_run_v2_service.api.uri,
        "--topic", local.canary_topic,
        "--interval", tostring(var.canary_interval_seconds),
        "--metrics-port", "8080",
      ]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        # Instance-based billing: the rounds run between requests (there are none).
        cpu_idle          = false
        startup_cpu_boost = false
      }

      dynamic "env" {
        for_each = local.canary_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # The API requires a key (LATAM_AUTH=on): the admin key the API itself reads, since
      # the canary creates its topic on first use (infra/README.md, "Choices and why").
      env {
        name = "LATAM_API_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.this["api-token"].secret_id
            version = "latest"
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
        period_seconds    = 30
        timeout_seconds   = 3
        failure_threshold = 3
      }
    }

    containers {
      name       = "prometheus-collector"
      image      = var.gmp_sidecar_image
      depends_on = ["canary"]

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

  lifecycle {
    ignore_changes = [
      client,
      client_version,
    ]
  }

  depends_on = [
    google_project_service.this,
    google_secret_manager_secret_iam_member.canary_api_key,
    google_secret_manager_secret_version.api_token,
  ]
}

locals {
  # Where Cloud Run's IAM guards the API (var.api_public false), the canary also sends a
  # Google ID token for the API's URL (roles/run.invoker below).
  canary_env = merge(
    {
      LATAM_ENVIRONMENT = var.environment
      LATAM_LOG_LEVEL   = "INFO"
    },
    var.api_public ? {} : { LATAM_CANARY_ID_TOKEN_AUDIENCE = google_cloud_run_v2_service.api.uri },
  )
}

# The canary calls an IAM-only API as its own account.
resource "google_cloud_run_v2_service_iam_member" "canary_invoker" {
  count = var.canary_enabled && !var.api_public ? 1 : 0

  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = google_service_account.canary[0].member
}
