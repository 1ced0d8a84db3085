# Binary Authorization: Cloud Run runs only images the pipeline built, scanned and signed.
# The build job signs an attestation for the image digest with a KMS key (after Trivy passed
# on that digest); the project policy admits only attested images, apart from the two images
# Google publishes that the services run before the first deploy and beside the app.

resource "google_kms_key_ring" "binauthz" {
  project  = var.project_id
  name     = "${local.name}-binauthz"
  location = var.region

  depends_on = [google_project_service.this]
}

resource "google_kms_crypto_key" "attestor" {
  #checkov:skip=CKV_GCP_43:Asymmetric signing keys cannot rotate automatically; a new key version is added to the attestor by hand (infra/README.md, rotation).
  name     = "attestor"
  key_ring = google_kms_key_ring.binauthz.id
  purpose  = "ASYMMETRIC_SIGN"

  version_template {
    algorithm        = "EC_SIGN_P256_SHA256"
    protection_level = "SOFTWARE"
  }

  lifecycle {
    prevent_destroy = true
  }
}

data "google_kms_crypto_key_version" "attestor" {
  crypto_key = google_kms_crypto_key.attestor.id
}

resource "google_container_analysis_note" "built_by_ci" {
  project = var.project_id
  name    = "${local.name}-built-by-ci"

  attestation_authority {
    hint {
      human_readable_name = "Built, scanned and signed by the latam deploy pipeline (${var.environment})"
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_binary_authorization_attestor" "built_by_ci" {
  project = var.project_id
  name    = "${local.name}-built-by-ci"

  attestation_authority_note {
    note_reference = google_container_analysis_note.built_by_ci.name

    public_keys {
      id = data.google_kms_crypto_key_version.attestor.id
      pkix_public_key {
        public_key_pem      = data.google_kms_crypto_key_version.attestor.public_key[0].pem
        signature_algorithm = data.google_kms_crypto_key_version.attestor.public_key[0].algorithm
      }
    }
  }
}

# One policy per project (staging and production are separate projects).
resource "google_binary_authorization_policy" "this" {
  project                       = var.project_id
  global_policy_evaluation_mode = "ENABLE"

  # The placeholder the services run until the first image, and the metrics and trace
  # sidecars (Google's images, set in variables.tf).
  admission_whitelist_patterns {
    name_pattern = "us-docker.pkg.dev/cloudrun/container/hello*"
  }
  admission_whitelist_patterns {
    name_pattern = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/*"
  }
  admission_whitelist_patterns {
    name_pattern = "us-docker.pkg.dev/cloud-ops-agents-artifacts/google-cloud-opentelemetry-collector/*"
  }

  default_admission_rule {
    evaluation_mode         = "REQUIRE_ATTESTATION"
    enforcement_mode        = var.binauthz_enforcement_mode
    require_attestations_by = [google_binary_authorization_attestor.built_by_ci.name]
  }
}

# --- the builder signs: attach occurrences to the note, sign with the key ---

resource "google_container_analysis_note_iam_member" "builder_attacher" {
  project = var.project_id
  note    = google_container_analysis_note.built_by_ci.name
  role    = "roles/containeranalysis.notes.attacher"
  member  = google_service_account.builder.member
}

resource "google_kms_crypto_key_iam_member" "builder_signer" {
  crypto_key_id = google_kms_crypto_key.attestor.id
  role          = "roles/cloudkms.signerVerifier"
  member        = google_service_account.builder.member
}

resource "google_binary_authorization_attestor_iam_member" "builder_viewer" {
  project  = var.project_id
  attestor = google_binary_authorization_attestor.built_by_ci.name
  role     = "roles/binaryauthorization.attestorsViewer"
  member   = google_service_account.builder.member
}

# Attestations are occurrences in the project; there is no narrower resource to bind to.
resource "google_project_iam_member" "builder_occurrences" {
  project = var.project_id
  role    = "roles/containeranalysis.occurrences.editor"
  member  = google_service_account.builder.member
}
