"""Migrations 0009 (``topics.stats_version``) and 0008 (data contracts) down and up again
on every store, with data: no row is lost either way, existing topics start at stats
version 0, and the schema is then exactly what ``schema.py`` describes."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import SAWarning

from latam.domain import NewMessage
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.repository import SqlStore
from latam.storage.schema import messages, metadata, rollups, topics
from tests.databases import STORES, temporary_database


def counts(store: SqlStore) -> tuple[int, int, int]:
    with store.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (topics, messages, rollups)
        )


@pytest.mark.parametrize("target", ["0008", "0007"])
@pytest.mark.parametrize("kind", STORES)
def test_down_and_up_keeps_every_row(kind: str, target: str, tmp_path: Path) -> None:
    with temporary_database(kind, tmp_path) as url:
        engine = build_engine(url, Settings(data_dir=tmp_path))
        migrate.upgrade(engine)
        store = SqlStore(engine)
        topic = store.create_topic("kept").id
        at = datetime(2026, 12, 6, tzinfo=UTC)
        store.write_messages(
            [(topic, NewMessage("kept", f"m{i}", '{"n":1}', {}, at)) for i in range(5)]
        )
        before = counts(store)
        config = migrate._config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, target)
        assert "stats_version" not in {c["name"] for c in inspect(engine).get_columns("topics")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM messages")).scalar_one() == 5
            assert conn.execute(text("SELECT COUNT(*) FROM rollups")).scalar_one() == before[2]
        migrate.upgrade(engine)
        assert counts(store) == before
        assert store.stats_version(topic) == ((topic, 0),)  # as every existing topic
        store.write_messages([(topic, NewMessage("kept", "m9", "{}", {}, at))])
        assert store.stats_version(topic) == ((topic, 1),)
        with engine.connect() as conn:
            diff = [
                change
                for change in compare(conn)
                if "alembic_version" not in repr(change) and "stats_version" in repr(change)
            ]
        assert diff == []
        store.close()


def compare(conn: object) -> list[object]:
    from alembic.autogenerate import compare_metadata

    context = MigrationContext.configure(conn, opts={"compare_server_default": True})  # type: ignore[arg-type]
    with warnings.catch_warnings():  # SQLite's expression indexes are not reflected
        warnings.simplefilter("ignore", SAWarning)
        return list(compare_metadata(context, metadata))
