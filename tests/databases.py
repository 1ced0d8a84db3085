"""A throw-away database per test on SQLite, PostgreSQL or MySQL/MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pymysql
from sqlalchemy.engine import make_url

from tests.support import MYSQL_URL, POSTGRES_URL, require, unique

STORES = ("sqlite", "postgresql", "mysql")


@contextmanager
def temporary_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """Yield a SQLAlchemy URL of an empty database that is dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    elif kind == "postgresql":
        yield from _postgres()
    elif kind == "mysql":
        yield from _mysql()
    else:
        raise ValueError(kind)


def _postgres() -> Iterator[str]:
    require(POSTGRES_URL, 5432, "PostgreSQL")
    admin = make_url(POSTGRES_URL)
    name = unique("latam_")
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _mysql() -> Iterator[str]:
    require(MYSQL_URL, 3306, "MySQL/MariaDB")
    admin = make_url(MYSQL_URL)
    name = unique("latam_")
    params = {
        "host": admin.host or "127.0.0.1",
        "port": admin.port or 3306,
        "user": admin.username or "root",
        "password": admin.password or "",
    }
    with pymysql.connect(**params) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield admin.set(drivername="mysql+pymysql", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with pymysql.connect(**params) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
