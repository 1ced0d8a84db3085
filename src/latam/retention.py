"""Retention: each topic with a ``retention_seconds`` loses the messages published longer
ago than that, oldest first, in bounded batches.

Every batch is one short transaction (``Store.expire``) that also takes the deleted rows
out of the rollups, so the stats stay exact; between batches writers of the topic go on.
The worker runs a pass every ``interval`` seconds; ``latam retention`` runs one now.
Several processes may run it at once: each batch takes the topic's lock, so they take
turns and never delete (or count) a row twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from latam import metrics
from latam.domain import utcnow
from latam.errors import TransientError
from latam.storage.port import Store

log = logging.getLogger(__name__)


@dataclass
class Retention:
    """Deletes expired messages, ``batch`` rows per transaction."""

    store: Store
    batch: int = 5_000
    pause_seconds: float = 0.02

    def run_once(self, stop: threading.Event | None = None, now: datetime | None = None) -> int:
        """One pass over every topic with a retention; how many messages it deleted."""
        stop = stop or threading.Event()
        now = now or utcnow()
        retained = self.store.retained_topics()
        names = self.store.topic_names(sorted(retained)) if retained else {}
        total = 0
        for topic_id, seconds in sorted(retained.items()):
            before = now - timedelta(seconds=seconds)
            while not stop.is_set():
                deleted = self.store.expire(topic_id, before=before, limit=self.batch)
                if deleted:
                    total += deleted
                    topic = names.get(topic_id, str(topic_id))
                    metrics.RETENTION_DELETED.labels(topic=topic).inc(deleted)
                if deleted < self.batch:
                    break
                stop.wait(self.pause_seconds)
        if total:
            log.info("retention deleted %d expired messages", total, extra={"deleted": total})
        return total

    def run_forever(self, stop: threading.Event, interval: float) -> None:
        """A pass every ``interval`` seconds until ``stop``; a store outage waits."""
        while not stop.wait(interval):
            try:
                self.run_once(stop)
            except TransientError as exc:
                log.warning("retention paused: %s", exc.detail)
