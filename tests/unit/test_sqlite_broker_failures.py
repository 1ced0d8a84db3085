"""The embedded queue when its file fails mid-operation: no publisher answers as if its
rows were written, and a failed settle never starves the consumer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from latam.broker.base import DeliveryPolicy
from latam.broker.sqlite import SqliteBroker
from latam.broker.sqlite.adapter import _Pending
from latam.domain import OutboundMessage
from latam.errors import BrokerUnavailable


def message(i: int) -> OutboundMessage:
    return OutboundMessage(
        topic="t", message_id=f"m-{i}", body=b"{}", attributes={}, published_at=datetime.now(UTC)
    )


@contextmanager
def failing(error: BaseException) -> Iterator[None]:
    raise error
    yield  # pragma: no cover - never reached


def test_a_group_commit_that_fails_fails_every_publisher_in_the_group(tmp_path: Path) -> None:
    broker = SqliteBroker(tmp_path / "q.db", DeliveryPolicy())
    other = _Pending([(b"{}", "{}", 0.0, 0.0)])  # queued by a concurrent publisher
    broker._pending.append(other)
    broker.file.tx = lambda **_: failing(RuntimeError("disk I/O"))  # type: ignore[method-assign]
    with pytest.raises(BrokerUnavailable):
        broker.publish([message(1)])
    assert other.done
    assert isinstance(other.error, BrokerUnavailable)


def test_a_failed_ack_does_not_keep_its_handles_in_flight(tmp_path: Path) -> None:
    policy = DeliveryPolicy(ack_deadline_seconds=0.3, max_in_flight=2)
    broker = SqliteBroker(tmp_path / "q.db", policy)
    broker.publish([message(i) for i in range(2)])
    held = broker.pull(max_messages=2, timeout=1)
    assert len(held) == 2
    working_tx = broker.file.tx
    broker.file.tx = lambda **_: failing(BrokerUnavailable("lock wait"))  # type: ignore[method-assign]
    with pytest.raises(BrokerUnavailable):
        broker.ack(held)
    with pytest.raises(BrokerUnavailable):
        broker.nack(held, reason="x", delay=0.0)
    broker.file.tx = working_tx  # type: ignore[method-assign]
    time.sleep(0.4)  # past the lease: the rows are deliverable again
    again = broker.pull(max_messages=2, timeout=2)
    assert sorted(d.delivery_attempt for d in again) == [2, 2]
    broker.ack(again)
    broker.close()
