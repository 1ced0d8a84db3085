"""SQL injection and hostile input through every string parameter of the API.

A real ``latam serve`` runs on each store (SQLite, PostgreSQL, MariaDB). Classic
injection payloads, SQL wildcards, backslashes, unicode, NUL bytes and very long strings
go into topic names (native and compatibility API), cursors, time filters, dead-letter
ids, message ids and attributes. Every answer must be a clean 2xx or a 4xx problem+json
(never a 5xx, never a stack trace or a path), and afterwards the data must be intact:
a canary topic and its messages are still there, and whatever was accepted is stored
literally.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.databases import STORES, temporary_database
from tests.support import create_topic, read_all, running_serve, unique, wait_for_count

PAYLOADS = [
    "' OR 1=1 --",
    "' OR '1'='1",
    "'; DROP TABLE messages; --",
    '"; DROP TABLE messages; --',
    "`; DROP TABLE topics; --",
    "1; SELECT pg_sleep(5)",
    "' UNION SELECT id, name FROM topics --",
    "%",
    "_",
    "%_%",
    "\\",
    "\\'",
    "\\x00",
    "ñandú 東京 🚀 \u202e",
    "\x00",
    "a\x00b",
    "\r\n",
    "${jndi:ldap://127.0.0.1/x}",
    "../../etc/passwd",
    "9" * 40,
    "-1",
    "x" * 10_000,
]
LEAKS = ("Traceback", 'File "', "/tmp/", "/work/", "sqlalchemy", "psycopg", "pymysql")


def assert_clean(response: httpx.Response, *accepted: int) -> None:
    """A 2xx the caller expects, or a 4xx problem+json that leaks nothing."""
    where = f"{response.request.method} {response.request.url}"
    assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text}"
    if response.status_code in accepted:
        return
    assert 400 <= response.status_code < 500, f"{where} -> {response.status_code}"
    assert response.headers["content-type"].startswith("application/problem+json"), where
    assert response.json()["status"] == response.status_code
    assert not any(leak in response.text for leak in LEAKS), f"{where} leaks: {response.text}"


class Canary:
    """A topic with known messages that must survive every payload untouched."""

    def __init__(self, client: httpx.Client) -> None:
        self.name = unique("canary-")
        self.topic_id = create_topic(client, self.name)
        body = {"messages": [{"id": f"canary-{i}", "data": {"i": i}} for i in range(3)]}
        assert client.post(f"/v1/topics/{self.topic_id}/messages", json=body).status_code == 202
        assert len(wait_for_count(client, self.topic_id, 3, timeout=30)) == 3

    def assert_intact(self, client: httpx.Client) -> None:
        topic = client.get(f"/v1/topics/{self.topic_id}")
        assert topic.status_code == 200, topic.text
        assert topic.json()["name"] == self.name
        stored = read_all(client, self.topic_id)
        assert sorted(m["id"] for m in stored) == ["canary-0", "canary-1", "canary-2"]


@pytest.fixture(scope="module", params=STORES)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Canary]]:
    data_dir = tmp_path_factory.mktemp(f"inject-{request.param}")
    with (
        temporary_database(request.param, data_dir) as url,
        running_serve(data_dir, database_url=url) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        canary = Canary(client)
        yield client, canary
        canary.assert_intact(client)


def test_topic_names_are_stored_literally_or_refused(api: tuple[httpx.Client, Canary]) -> None:
    client, canary = api
    accepted: dict[int, str] = {}
    for payload in PAYLOADS:
        created = client.post("/v1/topics", json={"name": payload})
        assert_clean(created, 201)
        if created.status_code == 201:
            assert created.json()["name"] == payload.strip()  # names are trimmed, by rule
            accepted[created.json()["id"]] = payload.strip()
            renamed = client.put(f"/v1/topics/{created.json()['id']}", json={"name": payload + "~"})
            assert_clean(renamed, 200)
            if renamed.status_code == 200:
                accepted[created.json()["id"]] = (payload + "~").strip()
        compat = client.post("/api/data", json={"nombre": "c" + payload})
        assert_clean(compat, 201)
        if compat.status_code == 201:
            assert compat.json()["nombre"] == ("c" + payload).strip()
            accepted[compat.json()["id"]] = ("c" + payload).strip()
            body = {"id": compat.json()["id"], "nombre": "r" + payload}
            renamed = client.put("/api/data", json=body)
            assert_clean(renamed, 200)
            if renamed.status_code == 200:
                accepted[compat.json()["id"]] = ("r" + payload).strip()
    assert len(accepted) >= len(PAYLOADS), "too few payloads were accepted as names"
    for topic_id, name in accepted.items():
        stored = client.get(f"/v1/topics/{topic_id}")
        assert stored.status_code == 200
        assert stored.json()["name"] == name, "a name was not stored literally"
    names = {row[1] for row in client.get("/api/data").json()["data"]}
    assert set(accepted.values()) | {canary.name} <= names
    canary.assert_intact(client)


def test_query_parameters_never_fail_the_server(api: tuple[httpx.Client, Canary]) -> None:
    client, canary = api
    topic = f"/v1/topics/{canary.topic_id}"
    for payload in PAYLOADS:
        for path, names in (
            ("/v1/topics", ("cursor",)),
            (f"{topic}/messages", ("cursor", "since", "until")),
            (f"{topic}/stats", ("since", "until", "bucket")),
            (f"/api/data/{canary.topic_id}", ("cursor",)),
            ("/v1/dead-letters", ("cursor",)),
        ):
            for name in names:
                assert_clean(client.get(path, params={name: payload}), 200)
    canary.assert_intact(client)


def test_dead_letter_ids_never_fail_the_server(api: tuple[httpx.Client, Canary]) -> None:
    client, canary = api
    for payload in PAYLOADS:
        path = f"/v1/dead-letters/{quote(payload, safe='')}"
        assert_clean(client.get(path), 200)
        assert_clean(client.post(f"{path}/replay"), 200)
        assert_clean(client.delete(path), 200)
    assert_clean(client.post("/v1/dead-letters/replay", json={"ids": PAYLOADS}), 200)
    assert_clean(client.request("DELETE", "/v1/dead-letters", json={"ids": PAYLOADS}), 200)
    canary.assert_intact(client)


def test_message_ids_and_attributes_are_stored_literally(api: tuple[httpx.Client, Canary]) -> None:
    client, canary = api
    topic_id = create_topic(client)
    expected: dict[str, dict[str, Any]] = {}
    for n, payload in enumerate(PAYLOADS):
        message = {"id": payload, "data": {"n": n, "text": payload}, "attributes": {"k": payload}}
        published = client.post(f"/v1/topics/{topic_id}/messages", json=message)
        assert_clean(published, 202)
        if published.status_code == 202:
            expected[published.json()["message_ids"][0]] = message
        keyed = {"data": {"n": n}, "attributes": {payload[:100]: "v"}}
        assert_clean(client.post(f"/v1/topics/{topic_id}/messages", json=keyed), 202)
    assert len(expected) >= len(PAYLOADS) // 2, "too few payloads were accepted as ids"
    stored = wait_for_count(client, topic_id, 2 * len(expected), timeout=60)
    time.sleep(0.5)
    by_id = {m["id"]: m for m in read_all(client, topic_id)}
    assert len(stored) <= len(by_id) + len(PAYLOADS)
    for message_id, message in expected.items():
        assert message_id in by_id, f"accepted id {message_id[:40]!r} was not stored"
        assert by_id[message_id]["data"] == message["data"]
        assert by_id[message_id]["attributes"] == message["attributes"]
    canary.assert_intact(client)
