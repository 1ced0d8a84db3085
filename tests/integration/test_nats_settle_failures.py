"""A settle that fails on NATS lets go of its handles: the message comes back after its
ack wait, and flow control does not keep counting it (after a few such failures the
worker would otherwise pull nothing, forever)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

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


def test_the_backlog_is_read_again_when_an_ack_removes_its_first_message(
    tmp_path: Path,
) -> None:
    """Between the stream's state and the read of its first message, a worker's ack may
    remove that message (work-queue retention): the backlog reads the state again rather
    than report the broker unavailable."""
    policy = DeliveryPolicy(ack_deadline_seconds=30, max_in_flight=10)
    with nats_harness(tmp_path) as harness:
        broker = harness.make(policy)
        assert isinstance(broker, NatsBroker)
        now = datetime.now(UTC)
        for i in range(3):  # three NATS messages (one publish of several is one batch)
            broker.publish([OutboundMessage("orders", f"m-{i}", b"{}", {}, now)])
        [first] = broker.pull(max_messages=1, timeout=5)
        js = broker._link.run(broker._ready())
        real_get_msg = js.get_msg
        calls: list[int] = []

        async def acked_meanwhile(stream: str, seq: int) -> object:
            calls.append(seq)
            if len(calls) == 1:  # the state said the first is here; an ack removes it
                await real_get_msg(stream, seq=seq)
                await broker._held.pop(first.handle).ack()  # as NatsBroker.ack, on its loop
                await broker._link.flush(timeout=10)
                for _ in range(50):  # until the server has removed it
                    try:
                        await real_get_msg(stream, seq=seq)
                    except NotFoundError:
                        break
                    await asyncio.sleep(0.02)
                return await real_get_msg(stream, seq=seq)  # NotFoundError now
            return await real_get_msg(stream, seq=seq)

        js.get_msg = acked_meanwhile
        try:
            backlog = broker.backlog()
        finally:
            js.get_msg = real_get_msg
            broker.close()
    assert backlog.messages == 2
    assert backlog.oldest_age_seconds is not None
    assert calls[0] < calls[1]  # read again from the new first message
