"""The embedded adapter: a durable queue in a SQLite file, ``sqlite:///path``."""

from latam.broker.sqlite.adapter import SqliteBroker
from latam.broker.sqlite.config import parse_sqlite_url

__all__ = ["SqliteBroker", "parse_sqlite_url"]
