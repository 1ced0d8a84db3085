"""``lifecycle.run_apart``: work in a forked child, as ``latam serve`` migrates."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from latam.process.lifecycle import run_apart


def leave_metric_files(directory: str) -> None:
    Path(directory, f"gauge_livesum_{os.getpid()}.db").write_bytes(b"x")
    Path(directory, f"counter_{os.getpid()}.db").write_bytes(b"x")


def test_the_exit_status_of_the_work() -> None:
    assert run_apart(lambda: None) == 0
    assert run_apart(sys.exit, 2) == 2
    assert run_apart(os._exit, 7) == 7


def test_what_the_child_loads_stays_in_the_child() -> None:
    module = "latam_apart_probe"

    def load() -> None:
        sys.modules[module] = sys  # stands for a library imported there

    assert run_apart(load) == 0
    assert module not in sys.modules


def test_its_metric_files_go_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    ours = tmp_path / f"counter_{os.getpid()}.db"
    ours.write_bytes(b"x")
    assert run_apart(leave_metric_files, str(tmp_path)) == 0
    assert [p.name for p in tmp_path.iterdir()] == [ours.name]


def test_a_sigterm_here_stops_the_child_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    try:
        code = run_apart(time.sleep, 30, name="the migration")
    finally:
        timer.cancel()
    assert code == 128 + signal.SIGTERM
    assert time.monotonic() - started < 20, "the child was not stopped"
    assert "the migration was stopped by signal 15" in caplog.text
    assert signal.getsignal(signal.SIGTERM) == before
