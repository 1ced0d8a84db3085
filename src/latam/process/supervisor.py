"""``serve``: run worker processes (and the canary) under supervision, serve
the API."""

from __future__ import annotations

import logging
import os
import signal
import subprocess  # nosec B404 - starts only latam's own worker, without a shell
import sys
import threading
import time

from latam.process.api import run_api
from latam.process.lifecycle import PARENT_PID_ENV
from latam.settings import Settings

log = logging.getLogger("latam")
RESTART_DELAY_SECONDS = 1.0
# A child that dies within this long of its start is restarted after twice the last
# delay, up to the cap: a crash loop costs a start every 30 s, not every second.
SHORT_LIFE_SECONDS = 10.0
MAX_RESTART_DELAY_SECONDS = 30.0


class WorkerSupervisor:
    """Runs ``latam`` child processes (``worker`` by default) and restarts any that dies."""

    def __init__(
        self, settings: Settings, count: int = 1, *, commands: list[list[str]] | None = None
    ) -> None:
        self.settings = settings
        self.commands = [["worker"]] * count if commands is None else commands
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * len(self.commands)
        self.started = [0.0] * len(self.commands)
        # Halved, so that a first short-lived child is restarted after RESTART_DELAY_SECONDS.
        self.delays = [RESTART_DELAY_SECONDS / 2] * len(self.commands)
        self.restart_at: list[float | None] = [None] * len(self.commands)
        self.stopping = threading.Event()

    def start(self) -> None:
        for slot in range(len(self.processes)):
            self._spawn(slot)
        threading.Thread(target=self._watch, daemon=True).start()

    def _spawn(self, slot: int) -> None:
        env = {
            **os.environ,
            "LATAM_WORKER_METRICS_PORT": "0",
            PARENT_PID_ENV: str(os.getpid()),
        }
        command = [sys.executable, "-m", "latam", *self.commands[slot]]
        process = subprocess.Popen(command, env=env)  # noqa: S603  # nosec B603
        self.processes[slot] = process
        self.started[slot] = time.monotonic()
        self.restart_at[slot] = None
        log.info("%s started (pid %d)", self.commands[slot][0], process.pid)

    def _watch(self) -> None:
        """Each slot on its own schedule: one child's crash loop delays no other."""
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            for slot, process in enumerate(self.processes):
                if process is None or process.poll() is None:
                    continue
                if self.restart_at[slot] is None:
                    short = now - self.started[slot] < SHORT_LIFE_SECONDS
                    delay = min(self.delays[slot] * 2, MAX_RESTART_DELAY_SECONDS)
                    self.delays[slot] = delay if short else RESTART_DELAY_SECONDS
                    self.restart_at[slot] = now + self.delays[slot]
                    what = self.commands[slot][0]
                    log.error(
                        "%s exited with %s; restarting in %.0f s",
                        what,
                        process.returncode,
                        self.delays[slot],
                    )
                restart_at = self.restart_at[slot]
                if restart_at is not None and now >= restart_at and not self.stopping.is_set():
                    self._spawn(slot)

    def stop(self) -> None:
        self.stopping.set()
        running = [p for p in self.processes if p is not None and p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds + 5
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def canary_url(settings: Settings) -> str:
    """The API of this ``serve`` as its own canary reaches it: over loopback when it
    listens on every address."""
    host = settings.host
    if host in ("", "0.0.0.0", "localhost"):  # noqa: S104  # nosec B104 - compared, not bound
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def run_serve(settings: Settings, *, canary_interval: float = 0) -> None:
    """Start the worker processes (and the canary with ``canary_interval``), serve the
    API; stop them on exit. The schema is migrated before (``latam serve``)."""
    commands = [["worker"]] * settings.worker_process_count
    if canary_interval:
        url = canary_url(settings)
        commands.append(["canary", "--url", url, "--interval", f"{canary_interval:g}"])
    supervisor = WorkerSupervisor(settings, commands=commands)
    supervisor.start()
    try:
        run_api(settings)
    finally:
        supervisor.stop()
