variable "project_id" {
  description = "Google Cloud project that holds the environment."
  type        = string
}

variable "region" {
  description = "Region for Cloud Run, Cloud SQL, Artifact Registry and BigQuery."
  type        = string
  default     = "us-central1"
}

variable "environment" {
  description = "Environment name: staging or production."
  type        = string

  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "latam"
}

variable "image" {
  description = "Container image by digest (REGION-docker.pkg.dev/PROJECT/REPO/latam@sha256:...). Empty deploys a placeholder until the first pipeline run."
  type        = string
  default     = ""

  validation {
    condition     = var.image == "" || can(regex("@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be pinned by digest (…@sha256:<64 hex>)."
  }
}

variable "api_public" {
  description = "true: anyone may invoke the API (it still checks its API key); false: callers need roles/run.invoker."
  type        = bool
  default     = false
}

variable "api_invokers" {
  description = "Members granted roles/run.invoker on the API when it is not public (e.g. group:producers@example.com)."
  type        = list(string)
  default     = []
}

variable "api_min_instances" {
  description = "Minimum warm API instances."
  type        = number
  default     = 1
}

variable "api_max_instances" {
  description = "Maximum API instances (bounds Cloud SQL connections: max x pool)."
  type        = number
  default     = 10
}

variable "api_concurrency" {
  description = "Requests served at once by one API instance."
  type        = number
  default     = 80
}

variable "api_cpu" {
  description = "vCPU limit of one API instance."
  type        = string
  default     = "1"
}

variable "api_memory" {
  description = "Memory limit of one API instance."
  type        = string
  default     = "512Mi"
}

variable "worker_min_instances" {
  description = "Minimum worker instances; at least 1 so the streaming pull never stops."
  type        = number
  default     = 1
}

variable "worker_max_instances" {
  description = "Maximum worker instances."
  type        = number
  default     = 4
}

variable "worker_cpu" {
  description = "vCPU limit of one worker instance."
  type        = string
  default     = "1"
}

variable "worker_memory" {
  description = "Memory limit of one worker instance."
  type        = string
  default     = "1Gi"
}

variable "worker_delivery" {
  description = "How Pub/Sub hands messages to the worker: pull (streaming pull, default) or push (OIDC-authenticated push to the worker service)."
  type        = string
  default     = "pull"

  validation {
    condition     = contains(["pull", "push"], var.worker_delivery)
    error_message = "worker_delivery must be pull or push."
  }
}

variable "message_retention_duration" {
  description = "How long the ingest topic keeps messages (allows seek/replay), e.g. 604800s."
  type        = string
  default     = "604800s"
}

variable "max_delivery_attempts" {
  description = "Deliveries before Pub/Sub moves a message to the dead-letter topic (5-100)."
  type        = number
  default     = 5
}

variable "db_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-custom-1-3840"
}

variable "db_availability_type" {
  description = "ZONAL or REGIONAL (regional = synchronous standby with automatic failover)."
  type        = string
  default     = "REGIONAL"
}

variable "db_disk_size_gb" {
  description = "Initial Cloud SQL disk size; it grows automatically."
  type        = number
  default     = 20
}

variable "db_disk_autoresize_limit_gb" {
  description = "Ceiling of the automatic disk growth in GB (0 = no ceiling); a runaway writer cannot grow the bill without bound."
  type        = number
  default     = 500
}

variable "db_deletion_protection" {
  description = "Protect the Cloud SQL instance from deletion (Terraform and API)."
  type        = bool
  default     = true
}

variable "bigquery_location" {
  description = "Location of the analytics dataset."
  type        = string
  default     = "US"
}

variable "bigquery_partition_expiration_days" {
  description = "Days a partition of the analytics table is kept; 0 keeps them forever."
  type        = number
  default     = 400
}

variable "github_repository" {
  description = "The only GitHub repository (owner/name) allowed to federate into this project."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "github_environment" {
  description = "GitHub environment whose jobs deploy here (staging or production)."
  type        = string
}

variable "terraform_service_account_email" {
  description = "Existing service account that runs terraform apply from CI (created at bootstrap). Empty: no federation binding for it."
  type        = string
  default     = ""
}

variable "terraform_state_bucket" {
  description = "GCS bucket of the Terraform state (created at bootstrap). Set: the pull-request planner may read the state. Empty: grant it by hand."
  type        = string
  default     = ""
}

variable "alert_notification_email" {
  description = "E-mail address that receives every ticket, and the pages too while page_notification_channels is empty."
  type        = string
}

variable "page_notification_channels" {
  description = "Notification channel ids (projects/P/notificationChannels/N) that receive pages (severity page, CRITICAL): a PagerDuty, SMS or mobile-app channel created once per project. Empty: pages go to the e-mail channel, which nobody should call paging."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.page_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "page_notification_channels takes channel ids such as projects/my-project/notificationChannels/123."
  }
}

variable "ticket_notification_channels" {
  description = "Notification channel ids that receive tickets (severity ticket, WARNING) besides the e-mail channel, e.g. a Google Chat or Slack channel."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ticket_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "ticket_notification_channels takes channel ids such as projects/my-project/notificationChannels/123."
  }
}

variable "gmp_sidecar_image" {
  description = "Managed Service for Prometheus collector sidecar for Cloud Run."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
}

variable "otel_collector_image" {
  description = "Google-built OpenTelemetry Collector, the traces sidecar of the API and the worker, by digest (0.135.0; infra/README.md says how to move it)."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/google-cloud-opentelemetry-collector/otelcol-google@sha256:90c2bab052e6c9da37efb6e7181b0cbb99562b9b39096dce895c7afe957b3b02"

  validation {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.otel_collector_image))
    error_message = "otel_collector_image must be pinned by digest (…@sha256:<64 hex>)."
  }
}

variable "trace_sample_ratio" {
  description = "Share of traces the API and the worker record and send to Cloud Trace (0-1), decided per trace id so both sides of a message agree; 0 runs no collector sidecar."
  type        = number
  default     = 0.1

  validation {
    condition     = var.trace_sample_ratio >= 0 && var.trace_sample_ratio <= 1
    error_message = "trace_sample_ratio must be between 0 and 1."
  }
}

variable "canary_enabled" {
  description = "Run the synthetic canary: a one-instance Cloud Run service (`latam canary`) that publishes a marked message through the API and reads it back, for the LatamCanaryFailing/LatamCanaryStale alerts."
  type        = bool
  default     = true
}

variable "canary_interval_seconds" {
  description = "Seconds between the canary's rounds (the canary alerts assume at most 120)."
  type        = number
  default     = 60

  validation {
    condition     = var.canary_interval_seconds >= 1 && var.canary_interval_seconds <= 120
    error_message = "canary_interval_seconds must be between 1 and 120."
  }
}

variable "slos_enabled" {
  description = "Create the Cloud Monitoring SLOs. Cloud Monitoring rejects an SLO on a metric it has never received, so this stays false until the first image has run and exported latam_* metrics; the deploy pipeline turns it on once the metric exists (infra/README.md, bootstrap)."
  type        = bool
  default     = false
}

variable "binauthz_enforcement_mode" {
  description = "ENFORCED_BLOCK_AND_AUDIT_LOG (default), or DRYRUN_AUDIT_LOG_ONLY for one deploy of an environment that already runs images signed by no attestor (infra/README.md)."
  type        = string
  default     = "ENFORCED_BLOCK_AND_AUDIT_LOG"

  validation {
    condition     = contains(["ENFORCED_BLOCK_AND_AUDIT_LOG", "DRYRUN_AUDIT_LOG_ONLY"], var.binauthz_enforcement_mode)
    error_message = "binauthz_enforcement_mode must be ENFORCED_BLOCK_AND_AUDIT_LOG or DRYRUN_AUDIT_LOG_ONLY."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}
