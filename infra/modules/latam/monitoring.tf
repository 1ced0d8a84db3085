# Uptime check, SLOs on the service's Prometheus metrics (Managed Service for Prometheus),
# and multi-window burn-rate alerts.

locals {
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

  slos = {
    availability = google_monitoring_slo.availability.name
    read_latency = google_monitoring_slo.read_latency.name
    freshness    = google_monitoring_slo.freshness.name
  }
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
    content   = "The ${each.value.slo} SLO of latam (${var.environment}) is consuming its 28-day error budget ${local.burn_rate_windows[each.value.window].threshold}x faster than sustainable. See docs/architecture.md and the runbook in the repository README."
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

  notification_channels = [google_monitoring_notification_channel.email.id]
}
