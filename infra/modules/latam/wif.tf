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

  # Only this repository, and only runs of its GitHub environments (<env>, whose reviewers
  # approve the apply and rollout; <env>-plan, which plans merged code; <env>-build, which
  # builds and signs the image) or of its pull requests (read-only plans). A branch push outside an environment gets no token; which
  # account each subject may act as is decided by the bindings below, not here.
  attribute_condition = join(" || ", [for subject in local.github_subjects_all : "assertion.sub == \"${subject}\""])

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

locals {
  # GitHub's OIDC subject for a job that runs in environment E is
  # repo:OWNER/NAME:environment:E, for a pull-request run repo:OWNER/NAME:pull_request.
  github_subjects = {
    environment  = "repo:${var.github_repository}:environment:${var.github_environment}"
    plan         = "repo:${var.github_repository}:environment:${var.github_environment}-plan"
    build        = "repo:${var.github_repository}:environment:${var.github_environment}-build"
    pull_request = "repo:${var.github_repository}:pull_request"
  }
  github_subjects_all = values(local.github_subjects)

  github_pool_subject = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/subject"

  # Which subject may act as which account: one subject, one job, one account. A pull
  # request (anyone who can push a branch can edit a workflow in one) gets the read-only
  # planner only; the build job (third-party build and scan actions) only the builder; the
  # admin and deployer accounts answer only to jobs of this environment, which GitHub
  # restricts to the deploy branch and, for <env>, to the environment's reviewers.
  wif_bindings = merge(
    {
      "deployer/environment" = { account = google_service_account.deployer.name, subject = local.github_subjects.environment }
      "builder/build"        = { account = google_service_account.builder.name, subject = local.github_subjects.build }
      "planner/pull_request" = { account = google_service_account.planner.name, subject = local.github_subjects.pull_request }
    },
    var.terraform_service_account_email == "" ? {} : {
      "terraform/environment" = { account = local.terraform_account, subject = local.github_subjects.environment }
      "terraform/plan"        = { account = local.terraform_account, subject = local.github_subjects.plan }
    },
  )
  terraform_account = "projects/${var.project_id}/serviceAccounts/${var.terraform_service_account_email}"
}

resource "google_service_account_iam_member" "wif" {
  for_each = local.wif_bindings

  service_account_id = each.value.account
  role               = "roles/iam.workloadIdentityUser"
  member             = "${local.github_pool_subject}/${each.value.subject}"
}

# Pull-request plans: read the state and the project, change nothing. They run with
# -refresh=false, so they never read a secret's payload either (see infra/README.md).
resource "google_service_account" "planner" {
  project      = var.project_id
  account_id   = "${local.name}-planner"
  display_name = "latam planner: read-only Terraform plans of pull requests (${var.environment})"
}

resource "google_project_iam_member" "planner_browser" {
  project = var.project_id
  role    = "roles/browser" # data.google_project; nothing else is read without refresh
  member  = google_service_account.planner.member
}

# The plan reads whether the app's metrics exist yet (slos_enabled) ...
resource "google_project_iam_member" "planner_monitoring" {
  project = var.project_id
  role    = "roles/monitoring.viewer"
  member  = google_service_account.planner.member
}

# ... and the attestor's public key, a data source read even without refresh.
resource "google_kms_crypto_key_iam_member" "planner_public_key" {
  for_each = toset(["roles/cloudkms.viewer", "roles/cloudkms.publicKeyViewer"])

  crypto_key_id = google_kms_crypto_key.attestor.id
  role          = each.value
  member        = google_service_account.planner.member
}

resource "google_storage_bucket_iam_member" "planner_state" {
  count = var.terraform_state_bucket != "" ? 1 : 0

  bucket = var.terraform_state_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.planner.member
}
