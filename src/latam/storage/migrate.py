"""Schema migrations with Alembic, run on an engine latam already built.

Only ``latam migrate`` (``upgrade``) loads Alembic. The schema check that every API and
worker process makes (``Store.ping``: readiness) reads the version table with one query
and compares it with ``HEAD``: Alembic, with Mako and Pygments that it loads, would add
about 11 MB to every process. ``tests/unit/test_migrations.py`` checks ``HEAD`` and
``KNOWN`` against Alembic's own reading of the migration scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from latam.storage.dialects import translate_errors

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision (versions/<HEAD>_*.py); revisions are numbered 0001, 0002, …
HEAD = "0009"
KNOWN = frozenset(f"{n:04d}" for n in range(1, int(HEAD) + 1))
VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; running it again changes nothing."""
    from alembic import command

    config = _config()
    with translate_errors(), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head()


def head() -> str:
    """The newest revision this code knows."""
    return HEAD


def current(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with translate_errors(), engine.connect() as connection:
        return current_revision(connection)


def current_revision(connection: Connection) -> str | None:
    """The revision in the version table; None where there is none (never migrated)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    # VERSION_TABLE, written out (a statement is never built from a variable here).
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    found = sorted(versions)
    # Migrations are linear (one head): more than one row would be a branch latam never makes.
    return found[-1] if found else None


def describe(revision: str | None) -> str | None:
    """What is wrong with a database at ``revision``, saying what to run; None if nothing."""
    expected = head()
    if revision == expected:
        return None
    if revision is None or revision in KNOWN:
        return f"schema at revision {revision or 'none'}, expected {expected}: run latam migrate"
    return (
        f"schema at revision {revision}, newer than this latam knows ({expected}): "
        "run the latam release that migrated it"
    )


def schema_problem(engine: Engine) -> str:
    """The schema's state in one line, for an error raised because a table was missing."""
    return describe(current(engine)) or "the store's schema is incomplete: run latam migrate"
