"""Field filters over HTTP: what they select, and a clear 400 for every malformed one
(never a 500, never a query that runs unbounded: a filtered read past
LATAM_QUERY_TIMEOUT_SECONDS is stopped by the database and answered 422)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from latam.domain import NewMessage
from latam.storage import migrate
from tests.databases import STORES, temporary_database
from tests.integration.test_api_errors import assert_problem, make_client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as made:
        yield made


@pytest.fixture
def topic_id(client: TestClient) -> int:
    topic = int(client.post("/v1/topics", json={"name": "flights"}).json()["id"])
    service = client.app.state.service  # type: ignore[attr-defined]
    rows = [
        ("a", '{"flight":"LA800","delay_min":20,"origin":"SCL"}', {"source": "ops"}),
        ("b", '{"flight":"LA801","delay_min":5,"origin":"LIM","gate":null}', {"source": "web"}),
        ("c", '{"flight":"LA800","delay_min":"20","origin":"SCL"}', {}),
    ]
    service.store.write_messages(
        [(topic, NewMessage("flights", mid, data, attributes)) for mid, data, attributes in rows]
    )
    return topic


def ids(client: TestClient, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["data"]]


def test_filters_select_over_http(client: TestClient, topic_id: int) -> None:
    base = f"/v1/topics/{topic_id}/messages"
    assert ids(client, f"{base}?data.flight=eq.LA800") == ["a", "c"]
    assert ids(client, f"{base}?data.flight=eq.LA800&data.delay_min=gte.15") == ["a"]
    assert ids(client, f'{base}?data.delay_min=eq."20"') == ["c"]
    assert ids(client, f"{base}?data.origin=in.(LIM,GRU)") == ["b"]
    assert ids(client, f"{base}?data.gate=is.null&attributes.source=neq.ops") == ["b"]
    page = client.get(f"{base}?data.flight=eq.LA800&limit=1").json()
    assert [row["id"] for row in page["data"]] == ["a"]
    rest = ids(client, f"{base}?data.flight=eq.LA800&limit=1&cursor={page['next_cursor']}")
    assert rest == ["c"]
    other = client.get(f"{base}?data.flight=eq.LA801&cursor={page['next_cursor']}")
    assert_problem(other, 400, "cursor")
    assert_problem(client.get(f"{base}?cursor={page['next_cursor']}"), 400, "cursor")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("data.flight=like.LA*", "data.flight"),  # unknown operator
        ("data.flight=LA800", "data.flight"),  # no operator
        ("data..flight=eq.x", "data..flight"),  # malformed path
        ("data=eq.x", "data"),  # no key
        ("data.fl%27ight=eq.x", "data.fl'ight"),  # a quote in a key
        ("data.a.b.c.d.e.f.g.h.i=eq.1", "data.a.b.c.d.e.f.g.h.i"),  # too deep
        ("attributes.a.b=eq.x", "attributes.a.b"),  # attributes are flat
        ("dat.flight=eq.x", "dat.flight"),  # a misspelt parameter is not ignored
        ("data.delay=lt.true", "data.delay"),  # ordering a boolean: a type mismatch
        ("data.delay=eq.null", "data.delay"),  # null compares with is
        ("data.delay=is.15", "data.delay"),
        ("attributes.k=is.true", "attributes.k"),  # attribute values are strings
        ("data.delay=in.()", "data.delay"),
        ("data.delay=in.(1,2", "data.delay"),
        ("data.delay=in.(true,1)", "data.delay"),
        ("data.delay=in.(" + ",".join(str(n) for n in range(101)) + ")", "data.delay"),
        ('data.x=in.("open,1)', "data.x"),
    ],
)
def test_a_malformed_filter_is_a_400_naming_it(
    client: TestClient, topic_id: int, query: str, field: str
) -> None:
    response = client.get(f"/v1/topics/{topic_id}/messages?{query}")
    body = assert_problem(response, 400, field)
    assert body["type"] == "https://latam.dev/problems/invalid-query"


def test_too_many_filters_are_a_400(client: TestClient, topic_id: int) -> None:
    query = "&".join(f"data.k{n}=eq.{n}" for n in range(21))
    assert_problem(client.get(f"/v1/topics/{topic_id}/messages?{query}"), 400)


def test_a_filter_on_a_missing_topic_is_a_404(client: TestClient) -> None:
    assert_problem(client.get("/v1/topics/999/messages?data.flight=eq.LA800"), 404)


@pytest.mark.parametrize("kind", STORES)
def test_a_filtered_read_past_the_timeout_is_stopped_with_a_422(kind: str, tmp_path: Path) -> None:
    with (
        temporary_database(kind, tmp_path) as url,
        make_client(tmp_path, database_url=url, query_timeout_seconds=0.001) as client,
    ):
        if kind != "sqlite":
            migrate.upgrade(client.app.state.service.store.engine)  # type: ignore[attr-defined]
        topic = int(client.post("/v1/topics", json={"name": "big"}).json()["id"])
        store = client.app.state.service.store  # type: ignore[attr-defined]
        body = '{"flight":"LA800","pad":"' + "x" * 400 + '"}'
        for chunk in range(8):
            store.write_messages(
                [(topic, NewMessage("big", f"m{chunk}-{n}", body)) for n in range(5_000)]
            )
        started = time.monotonic()
        # Nothing matches: the database would walk all 40,000 rows.
        response = client.get(f"/v1/topics/{topic}/messages?data.flight=eq.nowhere")
        elapsed = time.monotonic() - started
        problem = assert_problem(response, 422)
        assert problem["type"] == "https://latam.dev/problems/query-timeout"
        assert "LATAM_QUERY_TIMEOUT_SECONDS" in str(problem["detail"])
        assert elapsed < 5
        # The API keeps serving afterwards.
        assert client.get("/v1/topics").status_code == 200
        store.close()
