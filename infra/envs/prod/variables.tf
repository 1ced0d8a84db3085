variable "project_id" {
  description = "Google Cloud project of this environment."
  type        = string
}

variable "region" {
  description = "Region of the regional resources."
  type        = string
  default     = "us-central1"
}

variable "image" {
  description = "Image by digest, set by the deploy pipeline (TF_VAR_image); empty before the first deploy."
  type        = string
  default     = ""
}

variable "api_public" {
  description = "Whether anyone may invoke the API (it still requires its API key)."
  type        = bool
  default     = false
}

variable "api_invokers" {
  description = "Members allowed to invoke the API when it is IAM-only."
  type        = list(string)
  default     = []
}

variable "github_repository" {
  description = "owner/name of the GitHub repository allowed to deploy."
  type        = string
}

variable "terraform_service_account_email" {
  description = "Service account that runs terraform apply from GitHub Actions (created at bootstrap)."
  type        = string
  default     = ""
}

variable "alert_notification_email" {
  description = "Where tickets go (and pages while page_notification_channels is empty)."
  type        = string
}

variable "page_notification_channels" {
  description = "Notification channel ids that receive pages (PagerDuty, SMS): projects/P/notificationChannels/N."
  type        = list(string)
  default     = []
}

variable "ticket_notification_channels" {
  description = "Notification channel ids that receive tickets besides the e-mail (chat)."
  type        = list(string)
  default     = []
}

variable "terraform_state_bucket" {
  description = "GCS bucket of this environment's state; the pull-request planner gets read access to it."
  type        = string
  default     = ""
}

variable "slos_enabled" {
  description = "Create the SLOs and burn-rate alerts; the pipeline sets it once the app's metrics exist (infra/README.md, bootstrap)."
  type        = bool
  default     = false
}

variable "binauthz_enforcement_mode" {
  description = "Binary Authorization: ENFORCED_BLOCK_AND_AUDIT_LOG, or DRYRUN_AUDIT_LOG_ONLY for one deploy of an environment that predates it."
  type        = string
  default     = "ENFORCED_BLOCK_AND_AUDIT_LOG"
}
