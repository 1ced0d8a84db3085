"""Quarantine triage through a real ``latam serve`` with authentication on: filters and
counts, fix-and-replay and its refusals, and every change logged with the key that made it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.contract.brokers import SqliteHarness
from tests.support import LatamProcess, create_topic, running_serve, unique, wait_for_count

TOKEN = f"lt_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
SCHEMA = {"type": "object", "required": ["flight"], "properties": {"flight": {"type": "string"}}}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, Path, LatamProcess]]:
    data_dir = tmp_path_factory.mktemp("quarantine")
    with (
        running_serve(data_dir, auth="on", bootstrap_api_key=TOKEN) as (base, proc),
        httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client,
    ):
        yield client, data_dir, proc


def letters(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/dead-letters", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def wait_letters(client: httpx.Client, count: int, **params: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if len(found := letters(client, **params)) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"expected {count} dead letters for {params}, saw {found}")


def test_triage_fix_and_replay(served: tuple[httpx.Client, Path, LatamProcess]) -> None:
    client, data_dir, proc = served
    name, ghost = unique("q-"), unique("ghost-")
    topic_id = create_topic(client, name)
    assert client.put(f"/v1/topics/{topic_id}/schema", json={"schema": SCHEMA}).status_code == 200
    producer = SqliteHarness(data_dir / "broker.db")
    producer.publish_raw(b'{"flight": 1}', {"topic": name, "message_id": "bad-1"})
    producer.publish_raw(b"not json", {"topic": name, "message_id": "bad-2"})
    producer.publish_raw(b'{"flight": "LA1"}', {"topic": ghost, "message_id": "lost-1"})
    wait_letters(client, 2, topic=name)
    wait_letters(client, 1, topic=ghost)

    summary = client.get("/v1/dead-letters/summary", params={"topic": name}).json()
    assert summary["by_reason"] == {"schema_violation": 1, "invalid_json": 1}
    assert summary["total"] == 2
    everything = client.get("/v1/dead-letters/summary").json()
    assert everything["by_topic"][ghost] == 1
    assert everything["complete"] is True
    [violation] = letters(client, topic=name, reason="schema_violation")
    [not_json] = letters(client, topic=name, reason="invalid_json")
    assert letters(client, topic=name, until="2000-01-01T00:00:00Z") == []
    assert len(letters(client, topic=name, since="2000-01-01T00:00:00Z")) == 2
    [lost] = letters(client, topic=ghost)

    url = "/v1/dead-letters/{}/replay"
    # Not JSON and no correction given: 422 naming data; a correction fixes it.
    assert client.post(url.format(not_json["id"]), json={}).status_code == 200  # plain replay
    [not_json] = wait_letters(client, 1, topic=name, reason="invalid_json")
    refused = client.post(url.format(not_json["id"]), json={"attributes": {"fixed": "yes"}})
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "data"
    fixed = client.post(url.format(not_json["id"]), json={"data": {"flight": "LA2"}})
    assert fixed.json() == {"replayed": 1, "message_id": "bad-2"}, fixed.text
    # A topic that does not exist: 409, and the letter stays.
    missing = client.post(url.format(lost["id"]), json={"data": {"flight": "LA3"}})
    assert missing.status_code == 409, missing.text
    assert "create it, then replay" in missing.json()["detail"]
    assert [d["id"] for d in letters(client, topic=ghost)] == [lost["id"]]
    # Malformed corrections and unknown letters.
    for body in ({"data": [1]}, {"data": {"flight": "x"}, "attributes": {"topic": "x"}}, {"x": 1}):
        response = client.post(url.format(violation["id"]), json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert client.post(url.format("999999999"), json={"data": {}}).status_code == 404
    bad_range = {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    assert client.get("/v1/dead-letters", params=bad_range).status_code == 422
    # The schema violation, corrected with new attributes too.
    corrected = client.post(
        url.format(violation["id"]), json={"data": {"flight": "LA1"}, "attributes": {"by": "ops"}}
    )
    assert corrected.json() == {"replayed": 1, "message_id": "bad-1"}, corrected.text
    stored = {m["id"]: m for m in wait_for_count(client, topic_id, 2)}
    assert stored["bad-1"]["data"] == {"flight": "LA1"}
    assert stored["bad-1"]["attributes"] == {"by": "ops"}
    assert stored["bad-2"]["data"] == {"flight": "LA2"}
    assert letters(client, topic=name) == []

    log = proc.log()
    records = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    actions = [(r["action"], r["key_id"]) for r in records if "action" in r]
    # The key from LATAM_BOOTSTRAP_API_KEY is known by the id "bootstrap".
    assert actions.count(("dead letter corrected and replayed", "bootstrap")) == 2
    assert actions.count(("dead letters replayed", "bootstrap")) == 1
    assert actions.count(("schema set", "bootstrap")) == 1
    assert TOKEN not in log
