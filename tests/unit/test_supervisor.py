"""``latam serve``'s children: restarted on their own schedules, backing off a crash loop;
its canary reaches the API over loopback."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from latam.process.supervisor import WorkerSupervisor, canary_url
from latam.settings import Settings


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8123"),
        ("127.0.0.1", "http://127.0.0.1:8123"),
        ("::", "http://[::1]:8123"),
        ("::1", "http://[::1]:8123"),
        ("10.1.2.3", "http://10.1.2.3:8123"),
        ("api.internal", "http://api.internal:8123"),
    ],
)
def test_the_canary_url_of_a_bind_address(host: str, url: str, tmp_path: Path) -> None:
    assert canary_url(Settings(host=host, port=8123, data_dir=tmp_path)) == url


def test_a_crash_loop_backs_off_and_delays_no_other_child(tmp_path: Path) -> None:
    """A child that exits at once is restarted after 1, 2, 4 s; one that keeps running
    is left alone meanwhile."""
    supervisor = WorkerSupervisor(
        Settings(data_dir=tmp_path, shutdown_timeout_seconds=1),
        commands=[["--version"], ["canary", "--url", "http://127.0.0.1:9", "--interval", "60"]],
    )
    spawned: list[tuple[int, float]] = []
    spawn = supervisor._spawn

    def recording(slot: int) -> None:
        spawned.append((slot, time.monotonic()))
        spawn(slot)

    supervisor._spawn = recording  # type: ignore[method-assign]
    supervisor.start()
    try:
        time.sleep(9)
        crashing = [at for slot, at in spawned if slot == 0]
        running = [at for slot, at in spawned if slot == 1]
        assert running == running[:1], "the running child was restarted"
        gaps = [b - a for a, b in itertools.pairwise(crashing)]
        assert len(gaps) >= 2, spawned
        assert gaps[0] < 3, gaps  # about 1 s after the first exit
        assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    finally:
        supervisor.stop()
