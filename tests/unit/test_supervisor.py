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
    # (slot, when, the delay the supervisor waited before this start). The time between
    # two starts also holds the child's own run, which a loaded machine stretches: the
    # delays chosen are what must grow.
    spawned: list[tuple[int, float, float]] = []
    spawn = supervisor._spawn

    def recording(slot: int) -> None:
        spawned.append((slot, time.monotonic(), supervisor.delays[slot]))
        spawn(slot)

    supervisor._spawn = recording  # type: ignore[method-assign]
    supervisor.start()
    try:
        time.sleep(9)
        crashing = [(at, delay) for slot, at, delay in spawned if slot == 0]
        running = [at for slot, at, _delay in spawned if slot == 1]
        assert running == running[:1], "the running child was restarted"
        assert len(crashing) >= 3, spawned
        delays = [delay for _at, delay in crashing[1:]]
        assert delays[:2] == [1.0, 2.0], delays  # 1 s after the first exit, then doubled
        assert all(later > earlier for earlier, later in itertools.pairwise(delays)), delays
        for (before, _), (after, delay) in itertools.pairwise(crashing):
            assert after - before >= delay, (after - before, delay)  # it did wait
    finally:
        supervisor.stop()
