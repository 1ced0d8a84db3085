"""Process entry points: the API server, the worker process and ``serve`` (both)."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import subprocess  # nosec B404 - starts only latam's own worker, without a shell
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import TYPE_CHECKING

from latam.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("latam")
RESTART_DELAY_SECONDS = 1.0
# Set by `serve` for its worker: the worker stops when that parent is gone, so a killed
# `serve` never leaves an orphan consuming the queue.
PARENT_PID_ENV = "LATAM_SERVE_PARENT_PID"


def run_api(settings: Settings) -> None:
    """Serve the HTTP API until SIGINT/SIGTERM, in ``settings.api_processes`` processes.

    Each process builds its own app from the environment (``api_process_app``), so the
    host and port chosen on the command line are exported first: the processes must
    agree with this one, above all on whether keys are required.
    """
    import uvicorn

    os.environ["LATAM_HOST"], os.environ["LATAM_PORT"] = settings.host, str(settings.port)
    processes = settings.api_processes
    log.info(
        "API listening on http://%s:%d (docs at /docs), %d process(es)",
        settings.host,
        settings.port,
        processes,
    )
    if settings.auth_enabled:
        log.info("authentication is on: send 'Authorization: Bearer <key>' (latam keys create)")
    else:
        log.warning(
            "authentication is OFF (bound to loopback %s); set LATAM_AUTH=on to require keys",
            settings.host,
        )
    uvicorn.run(
        "latam.runtime:api_process_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=processes,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
    )


def api_process_app() -> FastAPI:
    """The app of one API process, from ``LATAM_*`` (uvicorn calls this in each process)."""
    from latam import tracing
    from latam.api.app import create_app
    from latam.bootstrap import build_service
    from latam.observability import configure_logging

    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    tracing.configure(service_name="latam-api", otlp_endpoint=settings.otlp_endpoint)
    if settings.api_processes > 1:
        # A process of a group: when the process that started the group is gone
        # (even killed with SIGKILL), stop instead of holding the port as an orphan.
        threading.Thread(
            target=_exit_with_parent,
            args=(os.getppid(), lambda *_: os.kill(os.getpid(), signal.SIGTERM)),
            daemon=True,
        ).start()
    service = build_service(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.store.close()
            service.broker.close()

    app = create_app(service, settings, lifespan=lifespan)
    gc.freeze()  # what start-up built lives as long as the process: keep it out of GC passes
    return app


def run_worker(settings: Settings) -> None:
    """Consume until SIGTERM/SIGINT; exit within ``shutdown_timeout_seconds``."""
    from latam import tracing
    from latam.bootstrap import build_broker, build_store
    from latam.worker import Worker

    tracing.configure(service_name="latam-worker", otlp_endpoint=settings.otlp_endpoint)
    worker = Worker(
        store=build_store(settings),
        broker=build_broker(settings),
        batch_size=settings.worker_batch_size,
        max_wait_seconds=settings.worker_max_wait_seconds,
        max_message_bytes=settings.max_message_bytes,
        max_delivery_attempts=settings.max_delivery_attempts,
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the batch in hand", signum)
        worker.stop.set()
        # Bounded exit: whatever is unacked is redelivered, so a hard exit loses nothing.
        timer = threading.Timer(settings.shutdown_timeout_seconds, _hard_exit)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if _EARLY_SIGNALS:
        on_signal(_EARLY_SIGNALS[0], None)
    if settings.worker_metrics_port:
        serve_worker_metrics(settings.host, settings.worker_metrics_port)
    if parent := os.environ.get(PARENT_PID_ENV):
        threading.Thread(
            target=_exit_with_parent, args=(int(parent), on_signal), daemon=True
        ).start()
    threading.Thread(target=worker.refresh_gauges_forever, daemon=True).start()
    worker.refresh_gauges()
    try:
        worker.run()
    finally:
        worker.store.close()
        worker.broker.close()


_EARLY_SIGNALS: list[int] = []


def defer_signals() -> None:
    """Remember SIGTERM/SIGINT that arrive while the worker is still starting up."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: _EARLY_SIGNALS.append(number))


def _exit_with_parent(parent: int, stop: Callable[[int, FrameType | None], object]) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    log.warning("the serve process %d is gone; stopping", parent)
    stop(signal.SIGTERM, None)


def _hard_exit() -> None:
    log.error("shutdown timeout reached; exiting with the batch unacknowledged")
    logging.shutdown()
    os._exit(3)


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        from latam import metrics

        if self.path == "/metrics":
            body, content_type = metrics.exposition()
        elif self.path == "/healthz":
            body, content_type = b'{"status":"ok"}', "application/json"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def serve_worker_metrics(host: str, port: int) -> None:
    """/metrics and /healthz of the worker on their own port, in a daemon thread."""
    server = ThreadingHTTPServer((host, port), _MetricsHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log.info("worker metrics on http://%s:%d/metrics", host, port)


def prepare_multiprocess_metrics(settings: Settings) -> None:
    """Share one metrics exposition between the API and worker processes of ``serve``."""
    directory = settings.data_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())


class WorkerSupervisor:
    """Runs ``latam worker`` child processes and restarts any that dies."""

    def __init__(self, settings: Settings, count: int = 1) -> None:
        self.settings = settings
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self.stopping = threading.Event()
        self.restarts = 0

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The first worker process (the only one with the default of one)."""
        return self.processes[0]

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
                    self.restarts += 1
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
