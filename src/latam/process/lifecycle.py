"""What every latam process shares: stopping on signals, stopping with its parent, and
one metrics exposition across the processes of ``serve``."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
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
