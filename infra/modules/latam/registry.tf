resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Images hold no customer data; Google-managed encryption keys are used (CMEK can be added with a kms_key_name variable).
  project       = var.project_id
  location      = var.region
  repository_id = local.name
  description   = "latam container images (${var.environment})"
  format        = "DOCKER"
  labels        = local.labels

  docker_config {
    immutable_tags = true
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"

    most_recent_versions {
      keep_count = 30
    }
  }

  cleanup_policies {
    id     = "delete-old-untagged"
    action = "DELETE"

    condition {
      tag_state  = "UNTAGGED"
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.this]
}
