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


@pytest.fixture(scope="session", autouse=True)
def _pubsub_emulator_lifetime() -> Iterator[None]:
    """Stop the Pub/Sub emulator the session started on first use, if any, when it ends
    (never one that PUBSUB_EMULATOR_HOST named before the tests started)."""
    from tests.pubsub_emulator import EMULATOR

    yield
    EMULATOR.stop()
