# Uptime check, SLOs on the service's Prometheus metrics (Managed Service for Prometheus),
# and the cloud twin of every Prometheus alert. The SLOs and the twins come from
# generated/cloud.json, which scripts/slo.py writes from deploy/slo/slos.yaml (`make slo`):
# the objectives, windows, thresholds and runbooks have one source.

locals {
  runbooks = "https://github.com/${var.github_repository}/blob/main/docs/runbooks.md"
  api_host = trimprefix(google_cloud_run_v2_service.api.uri, "https://")

  # Prometheus series land in Cloud Monitoring as prometheus.googleapis.com/<name>/<kind>
  # on the prometheus_target resource; the Cloud Run sidecar sets cluster="__run__" and
  # namespace=<service name>, which restricts them to this environment's services.
  prom_api    = "resource.type=\"prometheus_target\" resource.label.\"namespace\"=\"${google_cloud_run_v2_service.api.name}\""
  prom_worker = "resource.type=\"prometheus_target\" resource.label.\"namespace\"=\"${google_cloud_run_v2_service.worker.name}\""

  generated = jsondecode(file("${path.module}/generated/cloud.json"))

  # The Cloud Run services whose series each scope covers: SLO filters select the
  # prometheus_target resource of the scope's service, PromQL twins namespace=~"<all of
  # them>" (the canary's alerts read the canary service).
  services = {
    api    = google_cloud_run_v2_service.api.name
    worker = google_cloud_run_v2_service.worker.name
  }
  monitored_services = join("|", concat(values(local.services), google_cloud_run_v2_service.canary[*].name))

  # Pages go to the pager channels when set (PagerDuty, SMS…), else to the e-mail channel so
  # no page is lost; tickets go to e-mail and the extra ticket channels (chat…).
  page_channels   = length(var.page_notification_channels) > 0 ? var.page_notification_channels : [google_monitoring_notification_channel.email.id]
  ticket_channels = concat([google_monitoring_notification_channel.email.id], var.ticket_notification_channels)

  subscriptions = {
    worker      = google_pubsub_subscription.worker.name
    dead_letter = google_pubsub_subscription.dead_letter.name
  }

  # Empty until var.slos_enabled: Cloud Monitoring refuses an SLO on a metric it has never
  # received, so the SLOs (and their alerts) wait for the first image's metrics.
  slos = var.slos_enabled ? { for s in local.generated.slos : s.slo_id => s } : {}

  policies = { for p in local.generated.policies : p.key => p }
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

resource "google_monitoring_custom_service" "latam" {
  project      = var.project_id
  service_id   = "${local.name}-service"
  display_name = "latam (${var.environment})"

  depends_on = [google_project_service.this]
}

# Request-based SLOs, one per entry of the SLO spec: good/bad counters or a distribution
# cut of a histogram, on the prometheus_target series of the scope's Cloud Run service.
resource "google_monitoring_slo" "this" {
  for_each = local.slos

  project             = var.project_id
  service             = google_monitoring_custom_service.latam.service_id
  slo_id              = each.key
  display_name        = each.value.display_name
  goal                = each.value.goal
  rolling_period_days = each.value.rolling_period_days

  request_based_sli {
    dynamic "good_total_ratio" {
      for_each = can(each.value.bad_filter) ? [1] : []
      content {
        bad_service_filter   = "${each.value.bad_filter} AND resource.type=\"prometheus_target\" AND resource.label.\"namespace\"=\"${local.services[each.value.scope]}\""
        total_service_filter = "${each.value.total_filter} AND resource.type=\"prometheus_target\" AND resource.label.\"namespace\"=\"${local.services[each.value.scope]}\""
      }
    }

    dynamic "distribution_cut" {
      for_each = can(each.value.distribution_filter) ? [1] : []
      content {
        distribution_filter = "${each.value.distribution_filter} AND resource.type=\"prometheus_target\" AND resource.label.\"namespace\"=\"${local.services[each.value.scope]}\""

        range {
          min = 0
          max = each.value.good_max
        }
      }
    }
  }
}

# The cloud twin of every Prometheus alert (deploy/prometheus/rules/): same name, same
# threshold and duration, same runbook. PromQL conditions run the rule's own expression on
# Managed Service for Prometheus (the SLO burn alerts with both windows of every tier and
# the minimum of events, inlined because the cloud has no recording rules); Google metrics
# stand in where the truth lives there (Pub/Sub backlog and dead letters, uptime checks).
# Pages go to the pager channels, tickets to e-mail and chat.
resource "google_monitoring_alert_policy" "twin" {
  for_each = local.policies

  project      = var.project_id
  display_name = "${local.name} ${each.value.alert} (${each.value.severity})"
  combiner     = "OR"
  severity     = each.value.severity == "page" ? "CRITICAL" : "WARNING"

  dynamic "conditions" {
    for_each = can(each.value.promql) ? [1] : []
    content {
      display_name = "${each.value.alert} (${each.value.severity})"

      condition_prometheus_query_language {
        query               = replace(each.value.promql, "__SERVICES__", local.monitored_services)
        duration            = each.value.duration
        evaluation_interval = "60s"
        alert_rule          = each.value.alert
        rule_group          = "latam"
        labels = {
          severity = each.value.severity
        }
        # Series appear with the first scrape of a deployed image; the policy exists before.
        disable_metric_validation = true
      }
    }
  }

  dynamic "conditions" {
    for_each = can(each.value.native) ? [each.value.native] : []
    content {
      display_name = "${each.value.alert} (${each.value.severity}): ${conditions.value.metric}"

      condition_threshold {
        filter = join(" AND ", compact([
          "metric.type=\"${conditions.value.metric}\"",
          "resource.type=\"${conditions.value.resource}\"",
          try("resource.label.\"subscription_id\"=\"${local.subscriptions[conditions.value.subscription]}\"", ""),
          conditions.value.resource == "uptime_url" ? "metric.label.\"check_id\"=\"${google_monitoring_uptime_check_config.api.uptime_check_id}\"" : "",
        ]))
        comparison      = conditions.value.comparison
        threshold_value = conditions.value.threshold
        duration        = each.value.duration

        aggregations {
          alignment_period     = conditions.value.alignment
          per_series_aligner   = conditions.value.aligner
          cross_series_reducer = try(conditions.value.reducer, null)
          group_by_fields      = can(conditions.value.reducer) ? ["resource.label.host"] : null
        }
      }
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "latam (${var.environment}): ${each.value.alert} (${each.value.severity})"
    content   = "${each.value.summary}\n\nRunbook: ${each.value.runbook}"
  }

  notification_channels = each.value.severity == "page" ? local.page_channels : local.ticket_channels
}
