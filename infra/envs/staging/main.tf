# staging environment of latam. State lives in GCS; the bucket is given at init:
#   terraform init -backend-config="bucket=<state bucket>" -backend-config="prefix=latam/staging"

terraform {
  required_version = ">= 1.11.0" # write-only arguments

  backend "gcs" {}

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.23.0, < 7.0.0" # secret_data_wo
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.7.0, < 4.0.0" # ephemeral random_password
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    app         = "latam"
    environment = "staging"
  }
}

module "latam" {
  source = "../../modules/latam"

  project_id                      = var.project_id
  region                          = var.region
  environment                     = "staging"
  image                           = var.image
  api_public                      = var.api_public
  api_invokers                    = var.api_invokers
  github_repository               = var.github_repository
  github_environment              = "staging"
  terraform_service_account_email = var.terraform_service_account_email
  alert_notification_email        = var.alert_notification_email
  page_notification_channels      = var.page_notification_channels
  ticket_notification_channels    = var.ticket_notification_channels
  terraform_state_bucket          = var.terraform_state_bucket
  slos_enabled                    = var.slos_enabled
  binauthz_enforcement_mode       = var.binauthz_enforcement_mode

  api_min_instances    = 0
  api_max_instances    = 4
  db_tier              = "db-custom-1-3840"
  db_availability_type = "ZONAL"

  # Little traffic: every trace is kept.
  trace_sample_ratio = 1
}
