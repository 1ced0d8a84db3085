"""Schema migrations with Alembic, run on an engine latam already built."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from latam.storage.dialects import translate_errors

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; running it again changes nothing."""
    config = _config()
    with translate_errors(), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head()


@functools.cache
def head() -> str:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


@functools.cache
def known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions())


def current(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with translate_errors(), engine.connect() as connection:
        return current_revision(connection)


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def describe(revision: str | None) -> str | None:
    """What is wrong with a database at ``revision``, saying what to run; None if nothing."""
    expected = head()
    if revision == expected:
        return None
    if revision is None or revision in known_revisions():
        return f"schema at revision {revision or 'none'}, expected {expected}: run latam migrate"
    return (
        f"schema at revision {revision}, newer than this latam knows ({expected}): "
        "run the latam release that migrated it"
    )


def schema_problem(engine: Engine) -> str:
    """The schema's state in one line, for an error raised because a table was missing."""
    return describe(current(engine)) or "the store's schema is incomplete: run latam migrate"
