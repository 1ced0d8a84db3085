"""Typed configuration, read from ``LATAM_*`` environment variables and ``.env``.

Nothing here performs I/O beyond reading the environment: building a ``Settings``
never connects to a store or broker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".latam")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Settings(BaseSettings):
    """Every knob of latam. See the configuration table in the README."""

    model_config = SettingsConfigDict(
        env_prefix="LATAM_", env_file=".env", extra="ignore", frozen=True
    )

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Directory for embedded data files.")
    database_url: str = Field("", description="SQLAlchemy URL of the store; default SQLite.")
    broker_url: str = Field("", description="Broker URL: sqlite:///…, pubsub://…, nats://…")
    host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port the HTTP API binds to.")
    environment: Literal["development", "staging", "production"] = "development"
    api_workers: int = Field(
        0, ge=0, le=64, description="API processes; 0 = one per CPU this process may use, up to 4."
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Tracing: spans are always made (ids reach the logs); exported only when this is set.
    otlp_endpoint: str = Field("", description="OTLP/HTTP traces endpoint, e.g. http://host:4318.")
    gcp_project: str = Field("", description="Project for Cloud Logging trace fields.")

    # Limits on what the API accepts.
    max_message_bytes: int = Field(256 * 1024, gt=0, description="Largest message `data`.")
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Largest request body.")
    max_page_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="A page of messages stops at this many bytes of data and attributes"
        " (always at least one message); next_cursor continues after it.",
    )

    stats_cache_bytes: int = Field(
        16 * 1024 * 1024,
        ge=0,
        description="Bytes of stats answers each API process keeps, each given again while"
        " its topic's rollups and name are unchanged (0: none kept, every call reads).",
    )

    query_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Longest a filtered read, an aggregation or an export statement may run"
        " before the database stops it (the request gets a 422 that says so).",
    )
    query_cost_per_second: float = Field(
        1.0,
        ge=0,
        description="Seconds of database time per second each key (or client address"
        " without a key) may spend on aggregations; past its budget a 429 (0: no budget).",
    )
    query_cost_burst_seconds: int = Field(
        30,
        ge=1,
        le=86_400,
        description="Seconds of database time a key may spend on aggregations at once"
        " before its budget refills at query_cost_per_second.",
    )

    # Live tail (GET /v1/topics/{id}/stream): each API process polls the store once per
    # topic and filters, however many clients follow it.
    stream_poll_seconds: float = Field(
        0.1, gt=0, le=10, description="How often a live tail looks for new messages (s)."
    )
    stream_heartbeat_seconds: float = Field(
        15.0, gt=0, le=300, description="A ': keep-alive' comment on an idle stream every (s)."
    )
    stream_queue_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Events waiting for one slow stream client at most (bytes); past it the"
        " stream ends with `event: error` (the client resumes with Last-Event-ID).",
    )
    stream_send_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A stream or export whose client reads nothing for this long is dropped (s).",
    )
    stream_max_connections: int = Field(
        200, ge=1, description="Open streams per API process; more get 429."
    )
    stream_max_per_key: int = Field(
        20, ge=1, description="Open streams per API key (per address with auth off); more get 429."
    )

    max_concurrent_pages: int = Field(
        1,
        ge=1,
        le=256,
        description="Big pages of messages (past 128 KiB) one API process builds at a time,"
        " off the event loop; more wait their turn, small reads never do.",
    )
    max_concurrent_exports: int = Field(
        2,
        ge=1,
        le=64,
        description="Exports (GET /v1/topics/{id}/export) one API process streams at a time;"
        " one more is refused with 429 and Retry-After.",
    )

    # Access control and abuse limits.
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys required: auto = on unless bound to loopback."
    )
    anonymous_read: bool = Field(False, description="With auth on, allow GETs without a key.")
    bootstrap_api_key: SecretStr | None = Field(
        None, description="An admin key from the environment (Secret Manager), e.g. for deploys."
    )
    rate_limit_per_second: float = Field(100.0, ge=0, description="Requests/s per key (0: off).")
    rate_limit_burst: int = Field(200, ge=1, description="Requests a key may burst.")
    anonymous_rate_limit_per_second: float = Field(
        0.0, ge=0, description="Requests/s per client address without a key (0: off)."
    )
    failed_auth_per_second: float = Field(
        1.0,
        ge=0,
        description="Failed authentications/s per client address before 429 (0: off).",
    )
    failed_auth_burst: int = Field(
        30, ge=1, description="Failed authentications a client address may burst."
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Addresses whose X-Forwarded-For names the client (uvicorn's"
        " forwarded_allow_ips): per-address limits and the loopback check of /metrics"
        " see the real client only behind a proxy listed here.",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Serve the API's /metrics on this port instead of the API port (0: on"
        " the API port, where, with auth on, only loopback peers and admin keys read it).",
    )
    request_timeout_seconds: float = Field(30.0, gt=0, description="Time to send a body (s).")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins.")
    console_secret: SecretStr | None = Field(
        None,
        description="Signs the web console's session cookies and CSRF tokens; every API"
        " process of a deployment needs the same one (empty: random per `latam api`).",
    )

    # Delivery semantics shared by every broker.
    max_delivery_attempts: int = Field(5, ge=1, le=100)
    ack_deadline_seconds: float = Field(30.0, gt=0, description="Lease before redelivery (s).")
    backoff_min_seconds: float = Field(1.0, ge=0, description="First nack delay (s).")
    backoff_max_seconds: float = Field(60.0, ge=0, description="Longest nack delay (s).")
    max_in_flight: int = Field(5000, gt=0, description="Messages leased and not yet acked.")

    # Worker loop.
    worker_batch_size: int = Field(1000, gt=0, le=10_000, description="Messages per store write.")
    worker_processes: int = Field(
        0, ge=0, le=64, description="Workers `serve` runs; 0 = one per usable CPU, up to 4."
    )
    worker_max_wait_seconds: float = Field(0.05, ge=0, description="Wait to fill a batch (s).")
    shutdown_timeout_seconds: float = Field(20.0, gt=0, description="Bound on graceful exit (s).")
    worker_metrics_port: int = Field(9464, ge=0, le=65535, description="0 disables it.")
    retention_interval_seconds: float = Field(
        60.0, ge=0, description="How often workers delete expired messages (s); 0: never."
    )

    # Embedded SQLite: FULL fsyncs each commit so an accepted message survives power loss.
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = "FULL"

    # SQL connection pool (server databases only).
    db_pool_size: int = Field(5, ge=1, description="Connections kept open per process.")
    db_max_overflow: int = Field(10, ge=0, description="Extra connections under burst.")
    db_page_connections: int = Field(
        4,
        ge=1,
        le=64,
        description="Connections each API process reads pages on, on PostgreSQL through"
        " psycopg (its async pool): past a few, more queue on the database's cores instead.",
    )
    db_pool_timeout_seconds: float = Field(10.0, gt=0, description="Wait for a connection (s).")
    db_pool_recycle_seconds: int = Field(1800, ge=-1, description="Reopen connections after (s).")
    cloudsql_instance: str = Field("", description="PROJECT:REGION:INSTANCE for the connector.")
    cloudsql_ip_type: Literal["PRIVATE", "PUBLIC", "PSC"] = Field(
        "PRIVATE", description="Which address of the Cloud SQL instance the connector uses."
    )

    # Google Cloud Pub/Sub push endpoint.
    pubsub_push_audience: str = ""
    pubsub_push_service_account: str = ""
    pubsub_dead_letter_topic: str = ""
    pubsub_dead_letter_subscription: str = ""
    pubsub_pull_mode: Literal["streaming", "unary"] = Field(
        "streaming", description="How the worker pulls: streaming, or unary Pull RPCs."
    )
    pubsub_max_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description="Streaming-pull flow control: bytes leased (B)."
    )
    pubsub_publish_batch_messages: int = Field(
        1000, ge=1, le=1000, description="Messages per Pub/Sub Publish RPC."
    )
    pubsub_publish_batch_bytes: int = Field(
        9 * 1024 * 1024, gt=0, le=10_000_000, description="Bytes per Pub/Sub Publish RPC (B)."
    )
    nats_stream_replicas: int = Field(1, ge=1, le=5, description="Replicas of the streams.")

    # The public status page (/status): where its SLO states come from, and whose canary.
    status_prometheus_url: str = Field(
        "",
        description="Prometheus HTTP API the status page queries for SLO states, e.g."
        " http://127.0.0.1:9090 (empty: none, every SLO shows unknown).",
    )
    canary_topic: str = Field(
        "latam-canary",
        min_length=1,
        max_length=200,
        description="The synthetic canary's topic: where `latam canary` (and `latam serve"
        " --canary-interval`) publishes, and what the status page reads.",
    )

    @field_validator("database_url", "broker_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("status_prometheus_url")
    @classmethod
    def _prometheus_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if value and (parts.scheme not in {"http", "https"} or not parts.hostname):
            raise ValueError("must be an http:// or https:// URL of a Prometheus HTTP API")
        return value

    @field_validator("bootstrap_api_key")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 random characters")
        return value

    @field_validator("console_secret")
    @classmethod
    def _console_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 random characters")
        return value

    @property
    def loopback(self) -> bool:
        """Whether the API binds to a loopback address only."""
        return self.host in LOOPBACK_HOSTS

    @property
    def pubsub_push_enabled(self) -> bool:
        """Pub/Sub push is on when both the audience and the pushing service account are
        set (only then does the API load Google's auth libraries)."""
        return bool(self.pubsub_push_audience and self.pubsub_push_service_account)

    @property
    def auth_enabled(self) -> bool:
        """Keys are required when asked for, or by default off loopback."""
        if self.auth != "auto":
            return self.auth == "on"
        return not self.loopback

    @property
    def api_processes(self) -> int:
        """How many API processes to run: the setting, or one per usable CPU (at most 4)."""
        return self.api_workers or min(usable_cpus(), 4)

    @property
    def worker_process_count(self) -> int:
        """How many worker processes ``serve`` runs: the setting, or one per usable CPU."""
        return self.worker_processes or min(usable_cpus(), 4)

    @property
    def effective_database_url(self) -> str:
        """The store URL, defaulting to a SQLite file under ``data_dir``."""
        return self.database_url or f"sqlite:///{self.data_dir / 'latam.db'}"

    @property
    def effective_broker_url(self) -> str:
        """The broker URL, defaulting to an embedded SQLite queue under ``data_dir``."""
        return self.broker_url or f"sqlite:///{self.data_dir / 'broker.db'}"


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (containers)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count or 1, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count or 1)
