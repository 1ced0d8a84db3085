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
  description = "E-mail address that receives SLO burn-rate and uptime alerts."
  type        = string
}

variable "gmp_sidecar_image" {
  description = "Managed Service for Prometheus collector sidecar for Cloud Run."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
}

variable "slos_enabled" {
  description = "Create the SLOs and their burn-rate alerts. Cloud Monitoring rejects an SLO on a metric it has never received, so this stays false until the first image has run and exported latam_* metrics; the deploy pipeline turns it on once the metric exists (infra/README.md, bootstrap)."
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
