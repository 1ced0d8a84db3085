"""The worker process: the consume loop, its gauges and its own metrics port."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from latam.process.lifecycle import (
    EARLY_SIGNALS,
    PARENT_PID_ENV,
    exit_with_parent,
    hard_exit,
    serve_metrics,
)
from latam.settings import Settings

log = logging.getLogger("latam")


def run_worker(settings: Settings) -> None:
    """Consume until SIGTERM/SIGINT; exit within ``shutdown_timeout_seconds``."""
    from latam import tracing
    from latam.bootstrap import build_broker, build_store, delivery_policy
    from latam.retention import Retention
    from latam.storage.repository import SqlStore
    from latam.worker import Worker

    tracing.configure(service_name="latam-worker", otlp_endpoint=settings.otlp_endpoint)
    worker = Worker(
        store=build_store(settings),
        broker=build_broker(settings),
        batch_size=settings.worker_batch_size,
        max_wait_seconds=settings.worker_max_wait_seconds,
        max_message_bytes=settings.max_message_bytes,
        policy=delivery_policy(settings),
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the batch in hand", signum)
        worker.stop.set()
        # Bounded exit: whatever is unacked is redelivered, so a hard exit loses nothing.
        timer = threading.Timer(settings.shutdown_timeout_seconds, hard_exit)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if EARLY_SIGNALS:
        on_signal(EARLY_SIGNALS[0], None)
    if settings.worker_metrics_port:
        serve_metrics(settings.host, settings.worker_metrics_port, "worker")
    if parent := os.environ.get(PARENT_PID_ENV):
        threading.Thread(
            target=exit_with_parent, args=(int(parent), on_signal), daemon=True
        ).start()
    threading.Thread(target=worker.refresh_gauges_forever, daemon=True).start()
    if settings.retention_interval_seconds > 0:
        retention = Retention(worker.store)
        threading.Thread(
            target=retention.run_forever,
            args=(worker.stop, settings.retention_interval_seconds),
            daemon=True,
        ).start()
    if isinstance(worker.store, SqlStore):  # rows stored before the rollups existed
        threading.Thread(
            target=worker.store.build_rollups, args=(worker.stop,), daemon=True
        ).start()
    worker.refresh_gauges()
    try:
        worker.run()
    finally:
        worker.store.close()
        worker.broker.close()
