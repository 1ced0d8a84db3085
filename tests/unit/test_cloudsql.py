"""Cloud SQL engines: the seams around the connector, exercised without Google Cloud."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pg8000.dbapi
import pymysql
import pytest
from sqlalchemy.engine import make_url

from latam import bootstrap
from latam.bootstrap import ConfigError
from latam.domain import NewMessage
from latam.settings import Settings
from latam.storage import cloudsql, migrate
from latam.storage.cloudsql import cloudsql_engine
from latam.storage.port import PageRequest
from latam.storage.repository import SqlStore
from tests.databases import temporary_database

INSTANCE = "my-project:southamerica-east1:latam"


class FakeConnector:
    """Records what the engine asks of the connector; hands out ``connection``."""

    def __init__(self, connection: Any = None) -> None:
        self.connection = connection if connection is not None else object()
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.closed = False

    def connect(self, instance: str, driver: str, **kwargs: Any) -> Any:
        self.calls.append((instance, driver, kwargs))
        return self.connection

    def close(self) -> None:
        self.closed = True


def settings(database_url: str, **extra: Any) -> Settings:
    return Settings(cloudsql_instance=INSTANCE, database_url=database_url, **extra)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The arguments ``cloudsql_engine`` gives ``create_engine``."""
    seen: dict[str, Any] = {}
    real = cloudsql.create_engine

    def spy(url: str, **kwargs: Any) -> Any:
        seen.update(kwargs, url=url)
        return real(url, **kwargs)

    monkeypatch.setattr(cloudsql, "create_engine", spy)
    monkeypatch.setattr(cloudsql.atexit, "register", lambda _fn: None)
    return seen


PG_IAM_USER = "latam-sa@proj.iam"  # a service account, as PostgreSQL IAM users are named


@pytest.mark.parametrize(
    ("url", "driver", "drivername", "user"),
    [
        ("postgresql://latam-sa%40proj.iam@/events", "pg8000", "postgresql+pg8000", PG_IAM_USER),
        (
            "postgresql+psycopg://latam-sa%40proj.iam@/ev",
            "pg8000",
            "postgresql+pg8000",
            PG_IAM_USER,
        ),
        ("mysql+pymysql://latam-sa@/events", "pymysql", "mysql+pymysql", "latam-sa"),
    ],
)
def test_connections_come_from_the_connector_with_iam_auth(
    captured: dict[str, Any], url: str, driver: str, drivername: str, user: str
) -> None:
    fake = FakeConnector()
    engine = cloudsql_engine(settings(url), connector_factory=lambda _s: fake)
    assert engine.url.drivername == drivername
    assert captured["creator"]() is fake.connection
    database = make_url(url).database
    assert fake.calls == [
        (INSTANCE, driver, {"user": user, "db": database, "enable_iam_auth": True})
    ]


def test_the_connector_starts_on_first_connection_and_only_once(captured: dict[str, Any]) -> None:
    made: list[FakeConnector] = []

    def factory(_settings: Settings) -> FakeConnector:
        made.append(FakeConnector())
        return made[-1]

    cloudsql_engine(settings("postgresql://u@/db"), connector_factory=factory)
    assert made == []  # building the engine does no I/O
    captured["creator"]()
    captured["creator"]()
    assert len(made) == 1
    assert len(made[0].calls) == 2


def test_pool_settings_apply(captured: dict[str, Any]) -> None:
    chosen = settings("postgresql://u@/db", db_pool_size=7, db_pool_recycle_seconds=300)
    cloudsql_engine(chosen, connector_factory=lambda _s: FakeConnector())
    assert captured["pool_size"] == 7
    assert captured["pool_recycle"] == 300
    assert captured["pool_pre_ping"] is True


@pytest.mark.parametrize(("ip_type", "expected"), [("PRIVATE", "PRIVATE"), ("PSC", "PSC")])
def test_default_connector_gets_ip_type_and_iam_auth(
    monkeypatch: pytest.MonkeyPatch, ip_type: str, expected: str
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        "google.cloud.sql.connector.Connector", lambda **kwargs: seen.update(kwargs) or "c"
    )
    assert cloudsql._new_connector(settings("postgresql://u@/db", cloudsql_ip_type=ip_type)) == "c"
    assert seen == {"ip_type": expected, "enable_iam_auth": True, "refresh_strategy": "LAZY"}


def test_ip_type_defaults_to_private() -> None:
    assert Settings().cloudsql_ip_type == "PRIVATE"


@pytest.mark.parametrize(
    "url",
    ["", "sqlite:///x.db", "mssql+pytds://u@/db", "postgresql://@/db", "postgresql://u@/", "::"],
)
def test_unusable_url_is_a_config_error_naming_both_variables(url: str) -> None:
    with pytest.raises(ConfigError) as error:
        cloudsql_engine(settings(url), connector_factory=lambda _s: FakeConnector())
    assert "LATAM_DATABASE_URL" in str(error.value)
    assert "LATAM_CLOUDSQL_INSTANCE" in str(error.value)


def test_config_error_does_not_echo_the_password() -> None:
    with pytest.raises(ConfigError) as error:
        cloudsql_engine(settings("oracle://u:s3cret@/db"))
    assert "s3cret" not in str(error.value)


def test_build_store_takes_the_connector_path_without_connecting() -> None:
    store = bootstrap.build_store(settings("postgresql://latam@/events"))
    assert store.engine.url.drivername == "postgresql+pg8000"
    store.close()


def _direct_connection(kind: str, url: str) -> Any:
    """A connection to a local server, made the way the connector's driver would."""
    parts = make_url(url)
    common = {"user": parts.username, "host": parts.host, "port": parts.port}
    if kind == "postgresql":
        return pg8000.dbapi.connect(database=parts.database, password=parts.password, **common)
    return pymysql.connect(database=parts.database, password=parts.password or "", **common)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_store_works_over_the_connector_drivers(
    captured: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    """pg8000 and PyMySQL, the drivers the connector speaks, run the real store."""
    with temporary_database(kind, tmp_path) as url:
        database = make_url(url).database
        connector = FakeConnector()
        connector.connect = lambda *_a, **_k: _direct_connection(kind, url)  # type: ignore[method-assign]
        engine = cloudsql_engine(
            settings(f"{kind}://iam-user@/{database}"), connector_factory=lambda _s: connector
        )
        migrate.upgrade(engine)
        store = SqlStore(engine)
        topic = store.create_topic("flights")
        published = datetime(2026, 3, 2, 0, 0, 59, 999999, tzinfo=UTC)
        message = NewMessage(topic="flights", message_id="m1", data="{}", published_at=published)
        store.write_messages([(topic.id, message)])
        assert store.list_messages(topic.id, limit=5)[0].published_at == published
        [bucket] = store.topic_stats(topic.id, bucket="minute", since=None, until=None, limit=5)
        assert (bucket.start, bucket.count) == (published.replace(second=0, microsecond=0), 1)
        # The API's page reader on that engine: its statement, in the driver's dialect.
        reader = bootstrap.page_reader(store, settings(f"{kind}://iam-user@/{database}"))
        for after in (0, 10**9):
            request = PageRequest(topic_id=topic.id, limit=5, max_bytes=1 << 20, after_seq=after)
            page = asyncio.run(reader.page(request, heavy=True))
            assert [row["id"] for row in orjson.loads(page.array)] == (["m1"] if after == 0 else [])
        asyncio.run(reader.aclose())
        store.close()
