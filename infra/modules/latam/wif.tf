# GitHub Actions federates with short-lived OIDC tokens; no service-account keys exist.

resource "google_iam_workload_identity_pool" "github" {
  project                   = var.project_id
  workload_identity_pool_id = "${local.name}-github"
  display_name              = "GitHub Actions (${var.environment})"
  description               = "Identities of GitHub Actions runs of ${var.github_repository}"

  depends_on = [google_project_service.this]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  #checkov:skip=CKV_GCP_125:attribute_condition pins assertion.sub to repo:<var.github_repository> with its environment, deploy branch or pull_request context; the check cannot resolve the repository variable statically.
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github"
  display_name                       = "GitHub OIDC"

  attribute_mapping = {
    "google.subject"             = "assertion.sub"
    "attribute.repository"       = "assertion.repository"
    "attribute.repository_owner" = "assertion.repository_owner"
    "attribute.ref"              = "assertion.ref"
    "attribute.environment"      = "assertion.environment"
  }

  # Only this repository, and only runs of its deploy branch, its GitHub environment, or its
  # pull requests (plan); tokens of any other repository or context are rejected.
  attribute_condition = "assertion.sub == \"repo:${var.github_repository}:environment:${var.github_environment}\" || assertion.sub == \"repo:${var.github_repository}:ref:refs/heads/${var.github_deploy_branch}\" || assertion.sub == \"repo:${var.github_repository}:pull_request\""

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

locals {
  github_principal = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
}

resource "google_service_account_iam_member" "deployer_wif" {
  service_account_id = google_service_account.deployer.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.github_principal
}

resource "google_service_account_iam_member" "terraform_wif" {
  count = var.terraform_service_account_email != "" ? 1 : 0

  service_account_id = "projects/${var.project_id}/serviceAccounts/${var.terraform_service_account_email}"
  role               = "roles/iam.workloadIdentityUser"
  member             = local.github_principal
}
