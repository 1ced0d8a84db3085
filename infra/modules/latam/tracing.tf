# Traces. The API and the worker export their spans over OTLP/HTTP (LATAM_OTLP_ENDPOINT) to
# a Google-built OpenTelemetry Collector running beside them in the same instance, which
# batches them and writes them to Cloud Trace through the Telemetry (OTLP) API
# (telemetry.googleapis.com) as the instance's service account (roles/telemetry.tracesWriter,
# iam.tf). No code change: the app already exports when an endpoint is set, and already
# puts logging.googleapis.com/trace in its log lines (LATAM_GCP_PROJECT, cloudrun.tf).

locals {
  tracing_enabled = var.trace_sample_ratio > 0

  # The collector listens on loopback only: the app in the same instance is its one client.
  otlp_http_port        = 4318
  collector_health_port = 13133

  # For the app containers of the API and the worker. The OpenTelemetry SDK reads the
  # OTEL_TRACES_* pair itself (the app builds its tracer provider without a sampler when it
  # exports). "traceidratio" decides on the trace id alone, so the API's publish span and
  # the worker's store span of one message (the same trace id, carried in `traceparent`)
  # are kept or dropped together; it ignores the sampled flag Cloud Run's front end sets,
  # which would otherwise cap recording at Cloud Run's own rate (about one request in 10 s
  # per instance) whatever this ratio says.
  tracing_env = local.tracing_enabled ? {
    LATAM_OTLP_ENDPOINT     = "http://localhost:${local.otlp_http_port}"
    OTEL_TRACES_SAMPLER     = "traceidratio"
    OTEL_TRACES_SAMPLER_ARG = tostring(var.trace_sample_ratio)
  } : {}

  # The collector's whole configuration, handed to it in an environment variable
  # (`--config=env:OTELCOL_CONFIG`): nothing to mount, and a change makes a new revision.
  otel_collector_config = yamlencode({
    receivers = {
      otlp = { protocols = { http = { endpoint = "localhost:${local.otlp_http_port}" } } }
    }
    processors = {
      memory_limiter = { check_interval = "1s", limit_percentage = 65, spike_limit_percentage = 20 }
      # Cloud Run's resource attributes (service, revision, region, instance) on every span.
      resourcedetection = { detectors = ["env", "gcp"], timeout = "2s", override = false }
      # The Telemetry API files spans under the project named by gcp.project_id.
      "resource/project" = {
        attributes = [{ key = "gcp.project_id", value = var.project_id, action = "upsert" }]
      }
      batch = { send_batch_size = 200, send_batch_max_size = 200, timeout = "5s" }
    }
    exporters = {
      otlphttp = {
        encoding = "proto"
        endpoint = "https://telemetry.googleapis.com"
        auth     = { authenticator = "googleclientauth" }
      }
    }
    extensions = {
      # Cloud Run's startup probe of the sidecar asks this port.
      health_check     = { endpoint = "0.0.0.0:${local.collector_health_port}" }
      googleclientauth = { project = var.project_id }
    }
    service = {
      extensions = ["health_check", "googleclientauth"]
      pipelines = {
        traces = {
          receivers  = ["otlp"]
          processors = ["memory_limiter", "resourcedetection", "resource/project", "batch"]
          exporters  = ["otlphttp"]
        }
      }
      # The collector's own metrics would need a port and a scraper; its logs reach Cloud
      # Logging like any container's.
      telemetry = { metrics = { level = "none" } }
    }
  })
}
