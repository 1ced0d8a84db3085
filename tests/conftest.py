"""Fixtures shared by every suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import running_serve


@pytest.fixture(scope="session")
def live_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real ``latam serve`` (embedded defaults) shared by a session."""
    data_dir: Path = tmp_path_factory.mktemp("live")
    with running_serve(data_dir) as (base, _proc):
        yield base
