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
from pathlib import Path
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


def run_apart(target: Callable[..., object], *args: object, name: str = "work") -> int:
    """``target(*args)`` in a forked child; its exit status (0: it returned).

    For work whose libraries this process should never load (``latam serve`` migrates so:
    Alembic, with Mako and Pygments, is 11 MB that the API would keep). The child dies
    with this process (``PR_SET_PDEATHSIG``, on Linux), SIGTERM and SIGINT sent here are
    passed on to it, and the metric files it left in the multiprocess directory go with
    it. Where fork is not available, ``target`` runs here.
    """
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():  # pragma: no cover - Linux
        try:
            target(*args)
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else 1
        return 0
    child = multiprocessing.get_context("fork").Process(
        target=_child, args=(target, *args), name="latam-apart"
    )
    forward = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    child.start()

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        if child.pid is not None:
            os.kill(child.pid, signum)

    try:
        for signum in forward:
            signal.signal(signum, pass_on)
        child.join()
    finally:
        for signum, handler in forward.items():
            signal.signal(signum, handler)
        _forget_metrics_of(child.pid)
    code = child.exitcode if child.exitcode is not None else 1
    if code < 0:  # ended by a signal
        log.error("%s was stopped by signal %d", name, -code)
        return 128 - code
    return code


def _child(target: Callable[..., object], *args: object) -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the parent
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # stopped, not a KeyboardInterrupt trace
    target(*args)


def _forget_metrics_of(pid: int | None) -> None:
    """The child's files of the multiprocess metrics: its gauges would otherwise stay in
    the sums, and its PID in the instance's process totals (``SharedProcessCollector``)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if pid is None or not directory:
        return
    for path in Path(directory).glob(f"*_{pid}.db"):
        path.unlink(missing_ok=True)
