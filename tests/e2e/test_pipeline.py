"""End to end: a real ``latam serve`` process, HTTP in, HTTP out, on every store and broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.databases import temporary_database
from tests.e2e.backends import BROKERS
from tests.support import create_topic, running_serve, unique, wait_for_count

MATRIX = [("sqlite", "sqlite"), ("postgresql", "sqlite"), ("mysql", "sqlite")] + [
    ("sqlite", broker) for broker in sorted(BROKERS) if broker != "sqlite"
]
TOTAL = 5000
BATCH = 500


@pytest.fixture(params=MATRIX, ids=[f"{s}-{b}" for s, b in MATRIX])
def pipeline(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[httpx.Client, object]]:
    store_kind, broker_kind = request.param
    with (
        temporary_database(store_kind, tmp_path) as db_url,
        BROKERS[broker_kind](tmp_path) as backend,
        running_serve(tmp_path, database_url=db_url, **backend.settings) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        yield client, backend


def publish_marked(client: httpx.Client, topic_id: int, marker: str, count: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, BATCH):
        batch = [
            {"id": f"{marker}-{i}", "data": {"marker": marker, "n": i}, "attributes": {"i": str(i)}}
            for i in range(start, min(start + BATCH, count))
        ]
        response = client.post(f"/v1/topics/{topic_id}/messages", json={"messages": batch})
        assert response.status_code == 202, response.text
        ids.extend(response.json()["message_ids"])
    return ids


def test_publish_read_exactly_once_with_paging(pipeline: tuple[httpx.Client, object]) -> None:
    client, _backend = pipeline
    topic_id = create_topic(client)
    marker = unique("mk")
    ids = publish_marked(client, topic_id, marker, TOTAL)
    assert ids == [f"{marker}-{i}" for i in range(TOTAL)]
    stored = wait_for_count(client, topic_id, TOTAL, timeout=120)
    stored_ids = [m["id"] for m in stored]
    assert len(stored) == TOTAL
    assert sorted(stored_ids) == sorted(ids)  # every accepted id, each exactly once
    # Several workers store batches side by side: ingest order is per batch, not global.
    by_id = {m["id"]: m for m in stored}
    for i, message_id in enumerate(ids):
        assert by_id[message_id]["data"] == {"marker": marker, "n": i}
        assert by_id[message_id]["attributes"] == {"i": str(i)}
    # Pages of 100 walk the same sequence.
    paged: list[str] = []
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/topics/{topic_id}/messages", params=params).json()
        paged.extend(m["id"] for m in page["data"])
        if not (cursor := page["next_cursor"]):
            break
    assert paged == stored_ids
    # Re-publishing the same ids stores nothing new.
    publish_marked(client, topic_id, marker, 1000)
    sentinel = client.post(
        f"/v1/topics/{topic_id}/messages", json={"id": "sentinel", "data": {"last": True}}
    )
    assert sentinel.status_code == 202
    after = wait_for_count(client, topic_id, TOTAL + 1, timeout=60)
    assert len(after) == TOTAL + 1
    assert len({m["id"] for m in after}) == TOTAL + 1


def test_one_worker_stores_in_publish_order(tmp_path: Path) -> None:
    """With LATAM_WORKER_PROCESSES=1 the embedded queue is FIFO end to end."""
    with (
        running_serve(tmp_path, worker_processes=1) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        topic_id = create_topic(client)
        ids = publish_marked(client, topic_id, unique("fifo"), 3000)
        stored = wait_for_count(client, topic_id, len(ids), timeout=60)
    assert [m["id"] for m in stored] == ids


def test_dead_letters_contracts_and_replays(pipeline: tuple[httpx.Client, object]) -> None:
    """Both on one server per back-end (a server start is most of each one's cost)."""
    client, backend = pipeline
    poison_goes_to_dead_letters_and_replays(client, backend)
    data_contract_on_every_path(client, backend)


def poison_goes_to_dead_letters_and_replays(client: httpx.Client, backend: object) -> None:
    ghost = unique("ghost-")
    backend.publish_raw(b'{"lost": false}', {"topic": ghost, "message_id": "g-1"})  # type: ignore[attr-defined]
    backend.publish_raw(b"not json at all", {"topic": ghost})  # type: ignore[attr-defined]
    letters = wait_for_dead_letters(client, ghost, 2)
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons == ["invalid_json", "unknown_topic"]
    unknown = next(letter for letter in letters if letter["reason"] == "unknown_topic")
    assert unknown["data"] == {"lost": False}
    assert unknown["message_id"] == "g-1"
    bad = next(letter for letter in letters if letter["reason"] == "invalid_json")
    assert bad["body_base64"]
    # Once the topic exists, replaying the dead letter stores it.
    topic_id = create_topic(client, ghost)
    replay = client.post(f"/v1/dead-letters/{unknown['id']}/replay")
    assert replay.status_code == 200, replay.text
    assert replay.json() == {"replayed": 1}
    stored = wait_for_count(client, topic_id, 1, timeout=60)
    assert [m["id"] for m in stored] == ["g-1"]
    assert stored[0]["data"] == {"lost": False}
    # The replayed message again, straight onto the broker: a duplicate, stored once and
    # counted once by the stats (their rollups count only the rows an insert added).
    backend.publish_raw(b'{"lost": false}', {"topic": ghost, "message_id": "g-1"})  # type: ignore[attr-defined]
    backend.publish_raw(b'{"n": 2}', {"topic": ghost, "message_id": "g-2"})  # type: ignore[attr-defined]
    assert sorted(m["id"] for m in wait_for_count(client, topic_id, 2, timeout=60)) == [
        "g-1",
        "g-2",
    ]
    stats = client.get(f"/v1/topics/{topic_id}/stats", params={"bucket": "day"})
    assert stats.json()["total"]["count"] == 2, stats.text
    purge = client.delete(f"/v1/dead-letters/{bad['id']}")
    assert purge.json() == {"purged": 1}
    assert all(item["topic"] != ghost for item in list_dead_letters(client))


def list_dead_letters(client: httpx.Client) -> list[dict[str, object]]:
    response = client.get("/v1/dead-letters", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def wait_for_dead_letters(
    client: httpx.Client, topic: str, count: int, timeout: float = 90
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    mine: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        mine = [d for d in list_dead_letters(client) if d["topic"] == topic]
        if len(mine) >= count:
            return mine
        time.sleep(0.3)
    raise AssertionError(f"expected {count} dead letters for {topic}, saw {mine}")


def test_compat_contract_round_trip(pipeline: tuple[httpx.Client, object]) -> None:
    client, _backend = pipeline
    name = unique("tema-")
    created = client.post("/api/data", json={"nombre": name})
    assert created.status_code == 201
    topic_id = created.json()["id"]
    assert created.content == f'{{"id": {topic_id}, "nombre": "{name}"}}'.encode()
    listing = client.get("/api/data")
    assert f'[{topic_id}, "{name}"]'.encode() in listing.content
    assert client.get("/").content == listing.content
    client.post(f"/v1/topics/{topic_id}/messages", json={"id": "c1", "data": {"x": 1}})
    messages = wait_for_count(client, topic_id, 1)
    assert client.get(f"/api/data/{topic_id}").json()["data"] == messages
    renamed = client.put(f"/api/data/{topic_id}", json={"nombre": name + "-2"})
    assert renamed.content == f'{{"id": {topic_id}, "nombre": "{name}-2"}}'.encode()
    by_body = client.put("/api/data", json={"id": topic_id, "nombre": name + "-3"})
    assert by_body.json() == {"id": topic_id, "nombre": name + "-3"}
    assert client.delete(f"/api/data/{topic_id}").status_code == 204
    assert client.get(f"/api/data/{topic_id}").status_code == 404


CONTRACT = {
    "type": "object",
    "required": ["flight", "delay_min"],
    "properties": {"flight": {"type": "string"}, "delay_min": {"type": "integer"}},
}


def data_contract_on_every_path(client: httpx.Client, backend: object) -> None:
    """A topic's schema holds at the door (422 with pointers, nothing published) and for
    a direct producer (a ``schema_violation`` dead letter with the same pointers); what
    meets it is stored with its version; a replay that still fails is set aside again."""
    name = unique("contract-")
    topic_id = create_topic(client, name)
    put = client.put(f"/v1/topics/{topic_id}/schema", json={"schema": CONTRACT})
    assert put.status_code == 200, put.text
    url = f"/v1/topics/{topic_id}/messages"
    refused = client.post(
        url,
        json={
            "messages": [
                {"id": "h-0", "data": {"flight": "LA800", "delay_min": 0}},
                {"id": "h-1", "data": {"flight": "LA801", "delay_min": "12"}},
            ]
        },
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == [
        {"pointer": "/messages/1/data/delay_min", "message": '"12" is not of type "integer"'}
    ]
    accepted = client.post(url, json={"id": "h-2", "data": {"flight": "LA802", "delay_min": 5}})
    assert accepted.status_code == 202, accepted.text
    publish = backend.publish_raw  # type: ignore[attr-defined]
    publish(b'{"flight": "LA803", "delay_min": 7}', {"topic": name, "message_id": "d-1"})
    publish(b'{"flight": 803, "delay_min": 7}', {"topic": name, "message_id": "d-2"})
    stored = wait_for_count(client, topic_id, 2, timeout=60)
    assert sorted((m["id"], m["schema_version"]) for m in stored) == [("d-1", 1), ("h-2", 1)]
    [letter] = wait_for_dead_letters(client, name, 1)
    assert letter["reason"] == "schema_violation"
    assert letter["schema_version"] == 1
    assert letter["message_id"] == "d-2"
    assert letter["errors"] == [{"pointer": "/flight", "message": '803 is not of type "string"'}]
    # Triage: filters and counts by topic and reason.
    mine = {"topic": name, "reason": "schema_violation"}
    listed = client.get("/v1/dead-letters", params=mine).json()["data"]
    assert [d["message_id"] for d in listed] == ["d-2"]
    assert client.get("/v1/dead-letters", params={**mine, "reason": "invalid_json"}).json() == {
        "data": [],
        "next_cursor": None,
    }
    summary = client.get("/v1/dead-letters/summary", params={"topic": name}).json()
    assert summary == {
        "total": 1,
        "by_reason": {"schema_violation": 1},
        "by_topic": {name: 1},
        "complete": True,
    }
    # Replayed as it is, it fails again and is set aside again, never stored.
    replay = client.post(f"/v1/dead-letters/{letter['id']}/replay")
    assert replay.status_code == 200, replay.text
    [again] = wait_for_dead_letters(client, name, 1)
    assert again["reason"] == "schema_violation"
    # A correction that still fails is refused with pointers, and changes nothing.
    still = client.post(
        f"/v1/dead-letters/{again['id']}/replay", json={"data": {"flight": 803, "delay_min": 7}}
    )
    assert still.status_code == 422, still.text
    assert still.json()["errors"][0]["pointer"] == "/data/flight"
    # Fixed and replayed: stored once, under its id, and the letter is gone.
    fixed = client.post(
        f"/v1/dead-letters/{again['id']}/replay", json={"data": {"flight": "LA804", "delay_min": 7}}
    )
    assert fixed.status_code == 200, fixed.text
    assert fixed.json() == {"replayed": 1, "message_id": "d-2"}
    stored = wait_for_count(client, topic_id, 3, timeout=60)
    by_id = {m["id"]: m for m in stored}
    assert sorted(by_id) == ["d-1", "d-2", "h-2"]
    assert by_id["d-2"]["data"] == {"flight": "LA804", "delay_min": 7}
    assert by_id["d-2"]["schema_version"] == 1
    assert client.get("/v1/dead-letters", params={"topic": name}).json()["data"] == []


@pytest.mark.parametrize("broker_kind", sorted(BROKERS))
def test_ids_and_attributes_are_stored_exactly(tmp_path: Path, broker_kind: str) -> None:
    """An id with edge spaces and attributes a broker's own format cannot hold as they
    are (NATS headers: names that are not tokens, edge whitespace, line breaks, text
    beyond ASCII) are accepted over HTTP and stored as they were sent."""
    attributes = {
        "two words": "x",
        "Nats-Expected-Stream": "mine",
        "padded": "  both ends  ",
        "lines": "one\r\ntwo",
        "ñandú": "✈",
    }
    with (
        BROKERS[broker_kind](tmp_path) as backend,
        running_serve(tmp_path, **backend.settings) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        topic_id = create_topic(client)
        body = {"id": " odd id ", "data": {"n": 1}, "attributes": attributes}
        response = client.post(f"/v1/topics/{topic_id}/messages", json=body)
        assert response.status_code == 202, response.text
        (stored,) = wait_for_count(client, topic_id, 1, timeout=60)
    assert stored["id"] == " odd id "
    assert stored["attributes"] == attributes
