"""Numbers are stored as the producer wrote them, over HTTP as on the broker path:
an integer beyond 64 bits or a decimal longer than a double is not rounded."""

from __future__ import annotations

import httpx

from tests.support import create_topic, wait_for_count

BIG = b"123456789012345678901234567890"
LONG = b"3.14159265358979323846264"


def test_long_numbers_round_trip_exactly(live_server_url: str) -> None:
    with httpx.Client(base_url=live_server_url, timeout=30) as client:
        topic_id = create_topic(client)
        body = b'{"id": "n-1", "data": {"big": %s, "pi": %s, "small": 1.5}}' % (BIG, LONG)
        accepted = client.post(
            f"/v1/topics/{topic_id}/messages",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert accepted.status_code == 202, accepted.text
        wait_for_count(client, topic_id, 1, timeout=30)
        page = client.get(f"/v1/topics/{topic_id}/messages")
    assert b'"big":' + BIG in page.content
    assert b'"pi":' + LONG in page.content
    assert page.json()["data"][0]["data"]["big"] == int(BIG)
