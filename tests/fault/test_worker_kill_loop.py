"""``kill -9`` of the worker five times during a 50,000-message stream.

``latam api`` and ``latam worker`` run as separate processes on the embedded broker; the
worker is killed without warning every few seconds and started again. Every message the
API accepted must end up stored exactly once.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_crash import BATCH, Deployment, Producer, deployment
from tests.support import create_topic, wait_stored

__all__ = ["deployment"]  # the fixture of the e2e suite, here on the embedded broker

TOTAL = 50_000
KILLS = 5
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)
def test_kill_9_worker_five_times_stores_every_message_exactly_once(
    deployment: Deployment,
) -> None:
    topic_id = create_topic(deployment.client)
    producer = Producer(deployment.client, topic_id, limit=TOTAL)
    worker = deployment.worker()
    producer.start()
    for _ in range(KILLS):
        time.sleep(3.0)
        worker.kill9()
        time.sleep(0.5)
        worker = deployment.worker()
    producer.join(300)
    stored = wait_stored(deployment.client, topic_id, set(producer.accepted), timeout=300)
    worker.terminate()
    accepted = producer.accepted
    print(
        f"worker-kill-loop: kills={KILLS} accepted={len(accepted)} stored={len(stored)} "
        f"duplicated={len(stored) - len(set(stored))} lost={len(set(accepted) - set(stored))}"
    )
    assert len(accepted) >= TOTAL // 2, "too few publishes were accepted"
    assert len(accepted) >= KILLS * 10 * BATCH
    assert len(stored) == len(set(stored)), "a message was stored twice"
    assert set(accepted) == set(stored), "a message the API accepted was lost"
