terraform {
  required_version = ">= 1.11.0" # write-only arguments

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
