# Uptime check, SLOs on the service's Prometheus metrics (Managed Service for Prometheus),
# and multi-window burn-rate alerts.

locals {
  runbooks = "https://github.com/${var.github_repository}/blob/main/docs/runbooks.md"
  api_host = trimprefix(google_cloud_run_v2_service.api.uri, "https://")

  # Prometheus series land in Cloud Monitoring as prometheus.googleapis.com/<name>/<kind>
  # on the prometheus_target resource; the Cloud Run sidecar sets cluster="__run__" and
  # namespace=<service name>, which restricts them to this environment's services.
  prom_api    = "resource.type=\"prometheus_target\" resource.label.\"namespace\"=\"${google_cloud_run_v2_service.api.name}\""
  prom_worker = "resource.type=\"prometheus_target\" resource.label.\"namespace\"=\"${google_cloud_run_v2_service.worker.name}\""

  requests_metric  = "metric.type=\"prometheus.googleapis.com/latam_http_requests_total/counter\""
  latency_metric   = "metric.type=\"prometheus.googleapis.com/latam_http_request_duration_seconds/histogram\""
  freshness_metric = "metric.type=\"prometheus.googleapis.com/latam_message_freshness_seconds/histogram\""

  # Fast burn pages (2% of a 28-day budget in 1 h), slow burn tickets (5% in 6 h).
  burn_rate_windows = {
    fast = { lookback = "3600s", threshold = 14.4, duration = "120s" }
    slow = { lookback = "21600s", threshold = 6, duration = "900s" }
  }

  # Empty until var.slos_enabled: Cloud Monitoring refuses an SLO on a metric it has never
  # received, so the SLOs (and their alerts) wait for the first image's metrics.
  slos = var.slos_enabled ? {
    availability = google_monitoring_slo.availability[0].name
    read_latency = google_monitoring_slo.read_latency[0].name
    freshness    = google_monitoring_slo.freshness[0].name
  } : {}
}

resource "google_monitoring_notification_channel" "email" {
  project      = var.project_id
  display_name = "latam ${var.environment} on-call"
  type         = "email"
  labels = {
    email_address = var.alert_notification_email
  }

  depends_on = [google_project_service.this]
}

resource "google_monitoring_uptime_check_config" "api" {
  project      = var.project_id
  display_name = "${local.name}-api /healthz"
  timeout      = "10s"
  period       = "60s"

  http_check {
    path         = "/healthz"
    port         = 443
    use_ssl      = true
    validate_ssl = true

    accepted_response_status_codes {
      status_class = "STATUS_CLASS_2XX"
    }

    # An IAM-only API is probed with an OIDC token of the uptime-check service agent.
    dynamic "service_agent_authentication" {
      for_each = var.api_public ? [] : [1]
      content {
        type = "OIDC_TOKEN"
      }
    }
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project_id
      host       = local.api_host
    }
  }
}

# An IAM-only API answers the uptime check only if the Monitoring service agent, which
# signs its OIDC token, may invoke it. The agent is created with the first authenticated
# uptime check, hence the dependency.
resource "google_cloud_run_v2_service_iam_member" "uptime_invoker" {
  count = var.api_public ? 0 : 1

  project  = var.project_id
  location = google_cloud_run_v2_service.api.location
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = local.monitoring_agent

  depends_on = [google_monitoring_uptime_check_config.api]
}

resource "google_monitoring_alert_policy" "uptime" {
  project      = var.project_id
  display_name = "${local.name}-api uptime check failing"
  combiner     = "OR"

  conditions {
    display_name = "/healthz fails from several regions"

    condition_threshold {
      filter          = "metric.type=\"monitoring.googleapis.com/uptime_check/check_passed\" resource.type=\"uptime_url\" metric.label.\"check_id\"=\"${google_monitoring_uptime_check_config.api.uptime_check_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 1
      duration        = "300s"

      aggregations {
        alignment_period     = "1200s"
        per_series_aligner   = "ALIGN_NEXT_OLDER"
        cross_series_reducer = "REDUCE_COUNT_FALSE"
        group_by_fields      = ["resource.label.host"]
      }
    }
  }

  notification_channels = [google_monitoring_notification_channel.email.id]
}

resource "google_monitoring_custom_service" "latam" {
  project      = var.project_id
  service_id   = "${local.name}-service"
  display_name = "latam (${var.environment})"

  depends_on = [google_project_service.this]
}

# Availability: non-5xx responses / all responses >= 99.9 % over 28 days.
resource "google_monitoring_slo" "availability" {
  count = var.slos_enabled ? 1 : 0

  project             = var.project_id
  service             = google_monitoring_custom_service.latam.service_id
  slo_id              = "availability"
  display_name        = "99.9% of API requests succeed (28 days)"
  goal                = 0.999
  rolling_period_days = 28

  request_based_sli {
    good_total_ratio {
      bad_service_filter   = "${local.requests_metric} ${local.prom_api} metric.label.\"status_class\"=\"5xx\""
      total_service_filter = "${local.requests_metric} ${local.prom_api}"
    }
  }
}

# Read latency: GET requests faster than 300 ms >= 99 % over 28 days.
resource "google_monitoring_slo" "read_latency" {
  count = var.slos_enabled ? 1 : 0

  project             = var.project_id
  service             = google_monitoring_custom_service.latam.service_id
  slo_id              = "read-latency"
  display_name        = "99% of GET requests served in under 300 ms (28 days)"
  goal                = 0.99
  rolling_period_days = 28

  request_based_sli {
    distribution_cut {
      distribution_filter = "${local.latency_metric} ${local.prom_api} metric.label.\"method\"=\"GET\""

      range {
        min = 0
        max = 0.3
      }
    }
  }
}

# Freshness: messages stored within 60 s of publication >= 99 % over 28 days.
resource "google_monitoring_slo" "freshness" {
  count = var.slos_enabled ? 1 : 0

  project             = var.project_id
  service             = google_monitoring_custom_service.latam.service_id
  slo_id              = "freshness"
  display_name        = "99% of messages stored within 60 s of publication (28 days)"
  goal                = 0.99
  rolling_period_days = 28

  request_based_sli {
    distribution_cut {
      distribution_filter = "${local.freshness_metric} ${local.prom_worker}"

      range {
        min = 0
        max = 60
      }
    }
  }
}

resource "google_monitoring_alert_policy" "burn_rate" {
  for_each = {
    for pair in setproduct(keys(local.slos), keys(local.burn_rate_windows)) :
    "${pair[0]}-${pair[1]}" => { slo = pair[0], window = pair[1] }
  }

  project      = var.project_id
  display_name = "${local.name} SLO ${each.value.slo}: ${each.value.window} burn"
  combiner     = "OR"
  severity     = each.value.window == "fast" ? "CRITICAL" : "WARNING"

  conditions {
    display_name = "${each.value.slo} error budget burning ${local.burn_rate_windows[each.value.window].threshold}x over ${local.burn_rate_windows[each.value.window].lookback}"

    condition_threshold {
      filter          = "select_slo_burn_rate(\"${local.slos[each.value.slo]}\", \"${local.burn_rate_windows[each.value.window].lookback}\")"
      comparison      = "COMPARISON_GT"
      threshold_value = local.burn_rate_windows[each.value.window].threshold
      duration        = local.burn_rate_windows[each.value.window].duration
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The ${each.value.slo} SLO of latam (${var.environment}) is consuming its 28-day error budget ${local.burn_rate_windows[each.value.window].threshold}x faster than sustainable. Runbook: ${local.runbooks}#latam${replace(each.value.slo, "_", "")}budgetburn"
  }

  notification_channels = [google_monitoring_notification_channel.email.id]
}

# The backlog's truth on Pub/Sub is Pub/Sub's own metric (the app exports none there):
# the twin of the Prometheus rule LatamBacklogTooOld, same threshold and runbook.
resource "google_monitoring_alert_policy" "backlog_too_old" {
  project      = var.project_id
  display_name = "${local.name} LatamBacklogTooOld"
  combiner     = "OR"
  severity     = "CRITICAL"

  conditions {
    display_name = "oldest unacknowledged message on the worker subscription older than 300 s"

    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" resource.type=\"pubsub_subscription\" resource.label.\"subscription_id\"=\"${google_pubsub_subscription.worker.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 300
      duration        = "300s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Messages wait on the worker subscription of latam (${var.environment}) for more than 5 minutes: freshness is already lost. Runbook: ${local.runbooks}#latambacklogtooold"
  }

  notification_channels = [google_monitoring_notification_channel.email.id]
}

# Dead letters are a symptom worth a look even while the SLOs hold.
resource "google_monitoring_alert_policy" "dead_letters" {
  project      = var.project_id
  display_name = "${local.name} messages dead-lettered"
  combiner     = "OR"
  severity     = "WARNING"

  conditions {
    display_name = "dead-letter subscription backlog above zero"

    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" resource.type=\"pubsub_subscription\" resource.label.\"subscription_id\"=\"${google_pubsub_subscription.dead_letter.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Messages of latam (${var.environment}) were dead-lettered and wait in the dead-letter subscription. Runbook: ${local.runbooks}#latamdeadletterqueuenotempty"
  }

  notification_channels = [google_monitoring_notification_channel.email.id]
}
