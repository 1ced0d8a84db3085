# Cloud SQL for PostgreSQL. Applications log in with IAM database authentication through the
# Cloud SQL connector (no passwords); the instance accepts connector traffic only and has no
# authorized networks, so nothing (and certainly not 0.0.0.0/0) reaches it directly.

resource "google_sql_database_instance" "main" {
  #checkov:skip=CKV_GCP_79:POSTGRES_17 is the newest major version the service is tested with; major upgrades are planned in-place upgrades, not automatic.
  #checkov:skip=CKV_GCP_60:The public address accepts only Cloud SQL connector traffic (connector_enforcement = REQUIRED, IAM-authenticated, TLS, no authorized networks); a VPC is not needed for Cloud Run to reach it.
  project             = var.project_id
  name                = "${local.name}-pg"
  region              = var.region
  database_version    = "POSTGRES_17"
  deletion_protection = var.db_deletion_protection

  settings {
    tier                        = var.db_tier
    edition                     = "ENTERPRISE"
    availability_type           = var.db_availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.db_disk_size_gb
    disk_autoresize             = true
    disk_autoresize_limit       = var.db_disk_autoresize_limit_gb
    deletion_protection_enabled = var.db_deletion_protection
    connector_enforcement       = "REQUIRED"
    user_labels                 = local.labels

    ip_configuration {
      ipv4_enabled = true
      ssl_mode     = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
      # No authorized_networks blocks: direct connections from any address are refused.
    }

    backup_configuration {
      enabled                        = true
      start_time                     = "03:00"
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = 14
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7
      hour         = 4
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = true
      record_client_address   = false
    }

    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
  }

  # Autoresize grows the disk behind Terraform's back; without this every later plan would
  # shrink it back (impossible: it means replacing the instance, which deletion protection
  # turns into a failed apply on every deploy). The size given is the initial size only.
  lifecycle {
    ignore_changes = [settings[0].disk_size]
  }

  depends_on = [google_project_service.this]
}

resource "google_sql_database" "latam" {
  project  = var.project_id
  instance = google_sql_database_instance.main.name
  name     = local.db_name
}

# IAM database users: the runtime service accounts themselves.
resource "google_sql_user" "api" {
  project  = var.project_id
  instance = google_sql_database_instance.main.name
  name     = local.api_db_user
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}

resource "google_sql_user" "worker" {
  project  = var.project_id
  instance = google_sql_database_instance.main.name
  name     = local.worker_db_user
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}

# The break-glass administrator (a built-in user with a password) is created by a person at
# bootstrap, its password only in Secret Manager `latam-<env>-db-admin-password`
# (infra/README.md, step 3): a password generated here would sit in the Terraform state,
# which the pull-request planner can read.
