"""A producer writing straight onto the NATS stream with a ``Latam-Attributes`` header
that is not a JSON object of strings gets its message set aside with the reason,
instead of stored with attributes it did not mean."""

from __future__ import annotations

from pathlib import Path

from latam.broker.base import DeliveryPolicy
from latam.broker.nats.headers import PACKED
from tests.contract.brokers import nats_harness


def test_a_malformed_packed_header_is_delivered_with_its_defect(tmp_path: Path) -> None:
    with nats_harness(tmp_path) as harness:
        broker = harness.make(DeliveryPolicy(ack_deadline_seconds=5, max_in_flight=10))
        harness.publish_raw(b'{"n": 1}', {"topic": "orders", PACKED: '{"k": 1}'})
        harness.publish_raw(b'{"n": 2}', {"topic": "orders", PACKED: '{"k": "v"}'})
        got = []
        for _ in range(10):
            got += broker.pull(max_messages=2 - len(got), timeout=1)
            if len(got) == 2:
                break
        broker.ack(got)
        broker.close()
    by_body = {d.body: d for d in got}
    assert by_body[b'{"n": 1}'].defect == "invalid_attributes"
    assert by_body[b'{"n": 2}'].defect is None
    assert by_body[b'{"n": 2}'].attributes == {"topic": "orders", "k": "v"}
