"""Both SQLite files of the embedded mode cut a WAL that grew during a burst back to
64 MiB at the next checkpoint (without a limit it keeps its largest size for good)."""

from __future__ import annotations

from pathlib import Path

import pytest

from latam.broker.sqlite.admin import QueueFile
from latam.errors import ConfigError
from latam.settings import Settings
from latam.storage import dialects
from latam.storage.dialects import build_engine

LIMIT = 64 * 1024 * 1024


def test_the_store_and_the_queue_limit_their_wal(tmp_path: Path) -> None:
    engine = build_engine(f"sqlite:///{tmp_path / 'latam.db'}", Settings(data_dir=tmp_path))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_size_limit").scalar() == LIMIT
    engine.dispose()
    queue = QueueFile(tmp_path / "broker.db")
    assert queue.connect().execute("PRAGMA journal_size_limit").fetchone() == (LIMIT,)
    queue.connect().close()


def test_an_sqlite_too_old_for_insert_returning_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch insert needs INSERT … RETURNING (SQLite 3.35.4): an older library is a
    configuration error naming both versions, not a worker that fails every batch."""
    monkeypatch.setattr(dialects.sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(dialects.sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(ConfigError, match=r"SQLite 3\.35\.4 or newer.*uses 3\.34\.1"):
        build_engine(f"sqlite:///{tmp_path / 'store.db'}", Settings(data_dir=tmp_path))
