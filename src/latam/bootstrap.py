"""Composition root: builds the store, the broker, the service and the key store from
``Settings``.

The only module that knows which adapter backs which port. Nothing connects until an
adapter is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from anyio import CapacityLimiter
from sqlalchemy import Engine

from latam.broker.base import Broker, DeliveryPolicy
from latam.errors import ConfigError
from latam.keys import KeyStore, KeyVerifier
from latam.service import Service
from latam.settings import Settings
from latam.storage.dialects import build_engine
from latam.storage.keys import SqlKeyStore
from latam.storage.pages import SqlitePages
from latam.storage.port import PageReader, RenderedPages, StatsReader, Store
from latam.storage.repository import SqlStore
from latam.storage.server_pages import AsyncPgPages, EnginePages

if TYPE_CHECKING:
    from latam.broker.pubsub.config import PubsubConfig

__all__ = [
    "ConfigError",
    "build_broker",
    "build_key_store",
    "build_keys",
    "build_service",
    "build_store",
    "delivery_policy",
]


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        max_delivery_attempts=settings.max_delivery_attempts,
        ack_deadline_seconds=settings.ack_deadline_seconds,
        backoff_min_seconds=settings.backoff_min_seconds,
        backoff_max_seconds=settings.backoff_max_seconds,
        max_in_flight=settings.max_in_flight,
    )


def build_store(settings: Settings) -> SqlStore:
    if settings.cloudsql_instance:
        from latam.storage.cloudsql import cloudsql_engine

        return SqlStore(cloudsql_engine(settings), query_timeout=settings.query_timeout_seconds)
    try:
        engine = build_engine(settings.effective_database_url, settings)
    except Exception as exc:  # SQLAlchemy raises several types for a bad URL
        raise ConfigError(
            "LATAM_DATABASE_URL must be a SQLAlchemy URL such as "
            "postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db or sqlite:///path"
        ) from exc
    return SqlStore(engine, query_timeout=settings.query_timeout_seconds)


def build_broker(settings: Settings) -> Broker:
    url = settings.effective_broker_url
    scheme = urlsplit(url).scheme
    policy = delivery_policy(settings)
    if scheme == "sqlite":
        from latam.broker.sqlite import SqliteBroker, parse_sqlite_url

        try:
            path = parse_sqlite_url(url)
        except ValueError as exc:
            raise ConfigError(f"LATAM_BROKER_URL: {exc}") from exc
        return SqliteBroker(path, policy, synchronous=settings.sqlite_synchronous)
    if scheme == "pubsub":
        return _pubsub_broker(settings, policy)
    if scheme == "nats":
        from latam.broker.nats import NatsBroker, parse_nats_url

        try:
            config = parse_nats_url(url)
        except ValueError as exc:
            raise ConfigError(f"LATAM_BROKER_URL: {exc}") from exc
        return NatsBroker(config, policy, replicas=settings.nats_stream_replicas)
    raise ConfigError(
        f"LATAM_BROKER_URL must start with sqlite:///, pubsub:// or nats:// (got scheme {scheme!r})"
    )


def _pubsub_broker(settings: Settings, policy: DeliveryPolicy) -> Broker:
    from latam.broker.pubsub import PubsubBroker

    return PubsubBroker(
        pubsub_config(settings),
        policy,
        max_bytes=settings.pubsub_max_bytes,
        publish_batch_messages=settings.pubsub_publish_batch_messages,
        publish_batch_bytes=settings.pubsub_publish_batch_bytes,
        pull_mode=settings.pubsub_pull_mode,
    )


def pubsub_config(settings: Settings) -> PubsubConfig:
    """The Pub/Sub resource names from LATAM_BROKER_URL and the dead-letter settings."""
    from latam.broker.pubsub.config import parse_pubsub_url

    try:
        return parse_pubsub_url(
            settings.effective_broker_url,
            dead_letter_topic=settings.pubsub_dead_letter_topic,
            dead_letter_subscription=settings.pubsub_dead_letter_subscription,
        )
    except ValueError as exc:
        raise ConfigError(f"LATAM_BROKER_URL: {exc}") from exc


def build_service(settings: Settings) -> Service:
    store = build_store(settings)
    limiter = store_limiter(store, settings)
    pages = page_reader(store, settings, limiter)
    return Service(
        store=store,
        broker=build_broker(settings),
        max_message_bytes=settings.max_message_bytes,
        max_page_bytes=settings.max_page_bytes,
        pages=pages,
        stats=stats_reader(pages),
        store_limiter=limiter,
        stats_cache_bytes=settings.stats_cache_bytes,
    )


def store_limiter(store: SqlStore, settings: Settings) -> CapacityLimiter | None:
    """How many store calls an API process makes from threads at once: on a server
    database as many as the pool keeps connections (``LATAM_DB_POOL_SIZE``), since one
    more would open and close a connection for that call (p99 365 ms instead of 60 for
    hourly stats on PostgreSQL, 16 callers); on SQLite no limit beyond the thread pool."""
    if store.engine.url.get_backend_name() == "sqlite":
        return None
    return CapacityLimiter(settings.db_pool_size)


def page_reader(
    store: SqlStore, settings: Settings, limiter: CapacityLimiter | None = None
) -> PageReader:
    """How the API reads pages of messages from ``store``: the one place that chooses.

    A SQLite file: ``SqlitePages``, on its own read-only connections. PostgreSQL through
    psycopg: ``AsyncPgPages``, on the event loop. PostgreSQL through the Cloud SQL
    connector, and MySQL/MariaDB: ``EnginePages`` on an engine of its own, made for
    single reads (``dialects.pool_options``). Each returns the bytes ``RenderedPages``
    would (tests/contract/test_page_json.py)."""
    url = store.engine.url
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            return RenderedPages(store)
        return SqlitePages(Path(url.database), query_timeout=settings.query_timeout_seconds)
    if backend == "postgresql" and driver == "psycopg" and not settings.cloudsql_instance:
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return AsyncPgPages(
            conninfo,
            max_size=settings.db_page_connections,
            timeout=settings.db_pool_timeout_seconds,
            query_timeout=settings.query_timeout_seconds,
        )
    if settings.cloudsql_instance:
        from latam.storage.cloudsql import read_engine

        reads = read_engine(store.engine, settings)
    else:
        reads = build_engine(url.render_as_string(hide_password=False), settings, reads=True)
    return EnginePages(
        store, reads, limiter=limiter or CapacityLimiter(settings.db_pool_size), owned=True
    )


def stats_reader(pages: PageReader) -> StatsReader | None:
    """How the API reads the stats where the page reader can: on PostgreSQL through
    psycopg, on its async pool (one prepared statement per span, no thread hop); on a
    SQLite file, bounded ranges on its read-only connection on the event loop. Elsewhere
    (and where those readers decline) the store answers in a thread behind
    ``store_limiter``."""
    return pages if isinstance(pages, AsyncPgPages | SqlitePages) else None


def build_key_store(settings: Settings, store: Store | Engine | None = None) -> KeyStore:
    """The API keys, in the database of ``store`` (the configured store when None)."""
    source = build_store(settings) if store is None else store
    if isinstance(source, SqlStore):
        return SqlKeyStore(source.engine)
    if isinstance(source, Engine):
        return SqlKeyStore(source)
    raise ConfigError(f"API keys need a SQL store, not {type(source).__name__}")


def build_keys(settings: Settings, store: Store | Engine) -> KeyVerifier:
    """What verifies the API's bearer tokens: the keys beside ``store``, and the
    LATAM_BOOTSTRAP_API_KEY when set."""
    bootstrap = settings.bootstrap_api_key
    return KeyVerifier(
        build_key_store(settings, store),
        bootstrap_key=bootstrap.get_secret_value() if bootstrap else None,
    )
