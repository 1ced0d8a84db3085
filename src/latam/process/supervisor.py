"""``serve``: migrate, run worker processes under supervision, serve the API."""

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


class WorkerSupervisor:
    """Runs ``latam worker`` child processes and restarts any that dies."""

    def __init__(self, settings: Settings, count: int = 1) -> None:
        self.settings = settings
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count
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
        process = subprocess.Popen([sys.executable, "-m", "latam", "worker"], env=env)  # nosec B603
        self.processes[slot] = process
        log.info("worker started (pid %d)", process.pid)

    def _watch(self) -> None:
        while not self.stopping.wait(0.5):
            for slot, process in enumerate(self.processes):
                if process is not None and process.poll() is not None:
                    log.error("worker exited with %s; restarting", process.returncode)
                    time.sleep(RESTART_DELAY_SECONDS)
                    if not self.stopping.is_set():
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


def run_serve(settings: Settings) -> None:
    """Migrate, start the worker process, serve the API; stop the worker on exit."""
    from latam.bootstrap import build_store
    from latam.storage import migrate

    store = build_store(settings)
    migrate.upgrade(store.engine)
    store.close()
    supervisor = WorkerSupervisor(settings, settings.worker_process_count)
    supervisor.start()
    try:
        run_api(settings)
    finally:
        supervisor.stop()
