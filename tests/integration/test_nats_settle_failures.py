"""A settle that fails on NATS lets go of its handles: the message comes back after its
ack wait, and flow control does not keep counting it (after a few such failures the
worker would otherwise pull nothing, forever)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from latam.broker.base import DeliveryPolicy
from latam.broker.nats.adapter import NatsBroker
from latam.domain import OutboundMessage
from latam.errors import BrokerUnavailable
from tests.contract.brokers import nats_harness


def test_a_failed_dead_letter_copy_releases_the_message(tmp_path: Path) -> None:
    policy = DeliveryPolicy(ack_deadline_seconds=1, max_in_flight=1)
    with nats_harness(tmp_path) as harness:
        broker = harness.make(policy)
        assert isinstance(broker, NatsBroker)
        broker.publish([OutboundMessage("orders", "m-1", b"{}", {}, datetime.now(UTC))])
        [first] = broker.pull(max_messages=1, timeout=5)

        async def drop_dead_letter_stream() -> None:
            js = await broker._ready()
            await js.delete_stream(broker.config.dead_letter_stream)

        broker._link.run(drop_dead_letter_stream())
        with pytest.raises(BrokerUnavailable):
            broker.dead_letter([first], reason="invalid_json")
        time.sleep(1.2)  # past the ack wait
        again = broker.pull(max_messages=1, timeout=5)
        broker.close()
    assert [d.delivery_attempt for d in again] == [2]
