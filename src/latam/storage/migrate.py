"""Schema migrations with Alembic, run on an engine latam already built."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

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


def head() -> str:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def current(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with translate_errors(), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
