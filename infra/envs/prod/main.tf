# production environment of latam. State lives in GCS; the bucket is given at init:
#   terraform init -backend-config="bucket=<state bucket>" -backend-config="prefix=latam/production"

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
    environment = "production"
  }
}

module "latam" {
  source = "../../modules/latam"

  project_id                      = var.project_id
  region                          = var.region
  environment                     = "production"
  image                           = var.image
  api_public                      = var.api_public
  api_invokers                    = var.api_invokers
  github_repository               = var.github_repository
  github_environment              = "production"
  terraform_service_account_email = var.terraform_service_account_email
  alert_notification_email        = var.alert_notification_email
  page_notification_channels      = var.page_notification_channels
  ticket_notification_channels    = var.ticket_notification_channels
  terraform_state_bucket          = var.terraform_state_bucket
  slos_enabled                    = var.slos_enabled
  binauthz_enforcement_mode       = var.binauthz_enforcement_mode

  api_min_instances    = 2
  api_max_instances    = 20
  db_tier              = "db-custom-2-7680"
  db_availability_type = "REGIONAL"
}
