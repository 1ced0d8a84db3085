"""Engines for Cloud SQL through the Cloud SQL Python Connector, with IAM database auth.

Selected by ``LATAM_CLOUDSQL_INSTANCE`` (``PROJECT:REGION:INSTANCE``). ``LATAM_DATABASE_URL``
still says which database and which user: ``postgresql://SA-NAME%40PROJECT.iam@/DB`` or
``mysql://SA-NAME@/DB``. There is no password: the connector logs in with a short-lived
OAuth token of the process's Application Default Credentials.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from latam.errors import ConfigError
from latam.settings import Settings
from latam.storage.dialects import MYSQL_NAMES, pool_options

# The synchronous drivers the connector supports, by database: (connector name, SQLAlchemy URL).
DRIVERS = {
    "postgresql": ("pg8000", "postgresql+pg8000://"),
    "mysql": ("pymysql", "mysql+pymysql://"),
}
URL_HELP = (
    "LATAM_DATABASE_URL must name the database and the IAM user when LATAM_CLOUDSQL_INSTANCE "
    "is set, e.g. postgresql://SA-NAME%40PROJECT.iam@/DB or mysql://SA-NAME@/DB"
)

# The connection factory of each engine ``cloudsql_engine`` made, for ``read_engine``.
_CREATORS: weakref.WeakKeyDictionary[Engine, Callable[[], Any]] = weakref.WeakKeyDictionary()


def _new_connector(settings: Settings) -> Any:
    from google.cloud.sql.connector import Connector

    # LAZY refreshes the instance certificate on demand: background refresh starves when
    # Cloud Run throttles the CPU between requests.
    return Connector(
        ip_type=settings.cloudsql_ip_type, enable_iam_auth=True, refresh_strategy="LAZY"
    )


def _target(settings: Settings) -> tuple[str, str, URL]:
    """The connector driver, the SQLAlchemy URL to build the engine with, and the given URL."""
    try:
        url = make_url(settings.effective_database_url)
    except ArgumentError as exc:
        raise ConfigError(URL_HELP) from exc
    backend = url.get_backend_name()
    backend = "mysql" if backend in MYSQL_NAMES else backend
    if backend not in DRIVERS:
        raise ConfigError(f"{URL_HELP} (got a {backend} URL)")
    if not url.username or not url.database:
        raise ConfigError(URL_HELP)
    driver, engine_url = DRIVERS[backend]
    return driver, engine_url, url


def cloudsql_engine(
    settings: Settings, *, connector_factory: Callable[[Settings], Any] = _new_connector
) -> Engine:
    """An engine whose connections come from the Cloud SQL connector.

    The connector is created on the first connection, so building the engine does no I/O
    (the connector looks up credentials as it starts).
    """
    driver, engine_url, url = _target(settings)
    lock = threading.Lock()
    connectors: list[Any] = []

    def connector() -> Any:
        with lock:
            if not connectors:
                connectors.append(connector_factory(settings))
                atexit.register(connectors[0].close)
            return connectors[0]

    def creator() -> Any:
        return connector().connect(
            settings.cloudsql_instance,
            driver,
            user=url.username,
            db=url.database,
            enable_iam_auth=True,
        )

    engine = create_engine(engine_url, creator=creator, **pool_options(settings))
    _CREATORS[engine] = creator
    return engine


def read_engine(engine: Engine, settings: Settings) -> Engine:
    """An engine for the API's page reads (``dialects.pool_options``) whose connections
    come from the connector of ``engine``, made by ``cloudsql_engine``: one connector a
    process, as Google advises."""
    return create_engine(
        engine.url, creator=_CREATORS[engine], **pool_options(settings, reads=True)
    )
