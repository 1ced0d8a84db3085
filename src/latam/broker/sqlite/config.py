"""Where the embedded queue lives: parsed from ``sqlite:///path/to/broker.db``."""

from __future__ import annotations

from pathlib import Path


def parse_sqlite_url(url: str) -> Path:
    """The queue file's path; raises ``ValueError`` saying what is wrong."""
    path = url.removeprefix("sqlite:///")
    if not path or path == url:
        raise ValueError("expected sqlite:///path/to/broker.db")
    return Path(path)
