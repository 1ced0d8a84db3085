"""What every latam process shares: stopping on signals, stopping with its parent, and
one metrics exposition across the processes of ``serve``, and a metrics port apart."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from latam.settings import Settings

log = logging.getLogger("latam")
# Set by `serve` for its worker: the worker stops when that parent is gone, so a killed
# `serve` never leaves an orphan consuming the queue.
PARENT_PID_ENV = "LATAM_SERVE_PARENT_PID"
EARLY_SIGNALS: list[int] = []


def defer_signals() -> None:
    """Remember SIGTERM/SIGINT that arrive while the worker is still starting up."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: EARLY_SIGNALS.append(number))


def exit_with_parent(parent: int, stop: Callable[[int, FrameType | None], object]) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    log.warning("the serve process %d is gone; stopping", parent)
    stop(signal.SIGTERM, None)


def hard_exit() -> None:
    log.error("shutdown timeout reached; exiting with the batch unacknowledged")
    logging.shutdown()
    os._exit(3)


def prepare_multiprocess_metrics(settings: Settings) -> None:
    """Share one metrics exposition between the API and worker processes of ``serve``."""
    directory = settings.data_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        from latam import metrics

        if self.path == "/metrics":
            body, content_type = metrics.exposition(self.headers.get("Accept", ""))
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


def serve_metrics(host: str, port: int, what: str) -> None:
    """/metrics and /healthz on their own port, in a daemon thread: the worker's, and the
    API's with ``LATAM_METRICS_PORT`` (every process's, in multiprocess mode)."""
    server = ThreadingHTTPServer((host, port), _MetricsHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log.info("%s metrics on http://%s:%d/metrics", what, host, port)
