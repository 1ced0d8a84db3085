"""``GET /v1/topics/{id}/export`` through the real FastAPI app: NDJSON, CSV and Parquet,
the Accept header, filters, fields and windows on every SQL store (the same rows on each),
the 400/404/406/422 problems before the first byte, the per-process bound; and, through
a real ``latam api`` (uvicorn), a client that goes away and a store lost mid-stream."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from latam.api.app import create_app
from latam.bootstrap import build_keys, build_service
from latam.domain import NewMessage
from latam.service import Service
from latam.settings import Settings
from latam.storage import migrate
from tests.databases import STORES, temporary_database
from tests.support import LatamProcess, free_port, latam_env, wait_http

PROBLEM = "application/problem+json"
START = datetime(2026, 1, 1, 10, tzinfo=UTC)
ROWS = [
    {"flight": "LA800", "delay_min": 5, "route": {"origin": "SCL"}, "note": 'a,"b"\nc'},
    {"flight": "LA801", "delay_min": 15, "route": {"origin": "Bogotá"}},
    {"flight": "LA800", "delay_min": 20.5, "route": {"origin": "São Paulo"}, "gate": None},
    {"flight": "LA802", "delay_min": "late", "tags": ["x", 1]},
] * 30  # 120 rows, a minute apart


@contextmanager
def api(kind: str, tmp_path: Path, **overrides: Any) -> Iterator[tuple[TestClient, Service]]:
    with temporary_database(kind, tmp_path) as url:
        settings = Settings(data_dir=tmp_path, database_url=url, **overrides)
        service = build_service(settings)
        migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
        app = create_app(service, settings, build_keys(settings, service.store))
        try:
            with TestClient(app) as client:
                yield client, service
        finally:
            service.store.close()


def fill(store: Any, topic_id: int, rows: list[dict[str, Any]], name: str = "vuelos") -> None:
    messages = [
        (
            topic_id,
            NewMessage(
                topic=name,
                message_id=f"m{n:04d}",
                data=orjson.dumps(data).decode(),
                attributes={"source": "ops" if n % 2 else "web"},
                published_at=START + timedelta(minutes=n),
            ),
        )
        for n, data in enumerate(rows)
    ]
    for first in range(0, len(messages), 500):
        store.write_messages(messages[first : first + 500])


@pytest.fixture
def sqlite_api(tmp_path: Path) -> Iterator[tuple[TestClient, int]]:
    with api("sqlite", tmp_path) as (client, service):
        topic_id = int(client.post("/v1/topics", json={"name": "vuelos"}).json()["id"])
        fill(service.store, topic_id, ROWS)
        yield client, topic_id


def problem(response: Any, status: int) -> set[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    return {e["field"] for e in body.get("errors", [])}


def test_ndjson_is_every_message_as_reads_return_it(sqlite_api: tuple[TestClient, int]) -> None:
    client, topic_id = sqlite_api
    response = client.get(f"/v1/topics/{topic_id}/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"].startswith('attachment; filename="vuelos-start-')
    read = client.get(f"/v1/topics/{topic_id}/messages", params={"limit": 1000}).json()["data"]
    assert [orjson.loads(line) for line in response.content.splitlines()] == read
    assert len(read) == len(ROWS)


def test_csv_with_filters_fields_and_window(sqlite_api: tuple[TestClient, int]) -> None:
    client, topic_id = sqlite_api
    params = {
        "format": "csv",
        "fields": "message_id,published_at,data.delay_min,data.route,data.note,attributes.source",
        "data.flight": "eq.LA800",
        "data.delay_min": "gte.5",
        "since": (START + timedelta(minutes=4)).isoformat(),
        "until": (START + timedelta(minutes=40)).isoformat(),
    }
    response = client.get(f"/v1/topics/{topic_id}/export", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "-20260101T100400Z-20260101T104000Z.csv" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode(), newline="")))
    assert rows[0] == params["fields"].split(",")
    expected = [n for n in range(4, 40) if ROWS[n]["flight"] == "LA800"]
    assert [r[0] for r in rows[1:]] == [f"m{n:04d}" for n in expected]
    first = rows[1]
    assert first[2:] == ["5", '{"origin":"SCL"}', 'a,"b"\nc', "web"]
    assert rows[2][3] == '{"origin":"São Paulo"}'
    assert rows[2][4] == ""  # missing


def test_parquet_through_the_accept_header(sqlite_api: tuple[TestClient, int]) -> None:
    client, topic_id = sqlite_api
    response = client.get(
        f"/v1/topics/{topic_id}/export",
        params={"fields": "published_at,data.flight,data.tags,schema_version"},
        headers={"accept": "application/vnd.apache.parquet"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == len(ROWS)
    assert table.schema.field("published_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("data.flight").type == pa.string()
    assert table.column("data.tags").to_pylist()[3] == '["x",1]'
    assert table.column("published_at").to_pylist()[1] == START + timedelta(minutes=1)


def test_the_query_parameter_wins_and_ndjson_fields(sqlite_api: tuple[TestClient, int]) -> None:
    client, topic_id = sqlite_api
    response = client.get(
        f"/v1/topics/{topic_id}/export",
        params={
            "format": "ndjson",
            "fields": "data.delay_min,data.gate",
            "data.flight": "eq.LA802",
        },
        headers={"accept": "text/csv"},
    )
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert lines[0] == {"data.delay_min": "late", "data.gate": None}
    assert len(lines) == 30


@pytest.mark.parametrize(
    ("params", "headers", "status", "fields"),
    [
        ({"format": "xlsx"}, {}, 400, {"format"}),
        ({"fields": "data..x"}, {}, 400, {"fields"}),
        ({"fields": ",".join(f"data.f{i}" for i in range(51))}, {}, 400, {"fields"}),
        ({"data.flight": "like.LA"}, {}, 400, {"data.flight"}),
        ({"flight": "eq.LA800"}, {}, 400, {"flight"}),
        ({}, {"accept": "application/json"}, 406, set()),
        ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, {}, 422, {"since"}),
    ],
)
def test_bad_input_is_a_problem_before_streaming(
    sqlite_api: tuple[TestClient, int],
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    fields: set[str],
) -> None:
    client, topic_id = sqlite_api
    response = client.get(f"/v1/topics/{topic_id}/export", params=params, headers=headers)
    assert problem(response, status) == fields


def test_a_missing_topic_is_404(sqlite_api: tuple[TestClient, int]) -> None:
    client, _ = sqlite_api
    problem(client.get("/v1/topics/999999/export"), 404)


@pytest.mark.parametrize("kind", STORES)
def test_every_store_exports_the_same_filtered_range(kind: str, tmp_path: Path) -> None:
    with api(kind, tmp_path) as (client, service):
        topic_id = int(client.post("/v1/topics", json={"name": "vuelos"}).json()["id"])
        fill(service.store, topic_id, ROWS)
        params = {
            "format": "csv",
            "fields": "message_id,data.flight,data.delay_min,data.route.origin",
            "data.delay_min": "gte.10",
            "attributes.source": "eq.ops",
            "since": (START + timedelta(minutes=2)).isoformat(),
        }
        body = client.get(f"/v1/topics/{topic_id}/export", params=params).content.decode()
    expected = [
        f"m{n:04d},{row['flight']},{row['delay_min']},{row.get('route', {}).get('origin', '')}"
        for n, row in enumerate(ROWS)
        if n >= 2 and n % 2 and isinstance(row["delay_min"], int | float) and row["delay_min"] >= 10
    ]
    assert body.splitlines()[1:] == expected
    assert len(expected) == 29  # every other LA801, from the third row on


def test_exports_beyond_the_bound_are_429(tmp_path: Path) -> None:
    with api("sqlite", tmp_path, max_concurrent_exports=1) as (client, service):
        topic_id = int(client.post("/v1/topics", json={"name": "vuelos"}).json()["id"])
        fill(service.store, topic_id, ROWS)
        with client.stream("GET", f"/v1/topics/{topic_id}/export") as held:
            assert held.status_code == 200
            refused = client.get(f"/v1/topics/{topic_id}/export")
            problem(refused, 429)
            assert refused.headers["retry-after"]
            held.read()
        assert client.get(f"/v1/topics/{topic_id}/export").status_code == 200


BIG = [{"n": n, "pad": "x" * 2000} for n in range(12_000)]  # 24 MB: past any socket buffer


@contextmanager
def real_api(tmp_path: Path, url: str, **settings: Any) -> Iterator[tuple[httpx.Client, int]]:
    """``latam api`` (uvicorn) on ``url``, with a topic of ``BIG`` stored."""
    engine_settings = Settings(data_dir=tmp_path, database_url=url)
    service = build_service(engine_settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    topic_id = service.store.create_topic("big").id
    fill(service.store, topic_id, BIG, "big")
    service.store.close()
    port = free_port()
    env = latam_env(tmp_path, port=port, database_url=url, **settings)
    proc = LatamProcess(["api"], env, tmp_path / "api.log").start()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, topic_id
    finally:
        proc.terminate()


def test_a_client_that_goes_away_frees_its_export(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with real_api(tmp_path, url, max_concurrent_exports=1, api_workers=1) as (client, topic_id):
        with client.stream("GET", f"/v1/topics/{topic_id}/export") as response:
            assert response.status_code == 200
            next(response.iter_bytes())
        # Closed after one chunk: the export stops and its slot is free again (a slot
        # still held would answer 429 for as long as the 24 MB were left to send).
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while (
            client.get(
                f"/v1/topics/{topic_id}/export", params={"until": START.isoformat()}
            ).status_code
            == 429
        ):
            assert datetime.now(UTC) < deadline, "the export went on after the client left"


def test_a_client_that_reads_nothing_loses_its_export_slot(tmp_path: Path) -> None:
    """A client that takes nothing (its connection up, its receive window shut) is
    dropped after LATAM_STREAM_SEND_TIMEOUT_SECONDS: it would hold the slot forever."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    settings = {"max_concurrent_exports": 1, "api_workers": 1, "stream_send_timeout_seconds": 1}
    with real_api(tmp_path, url, **settings) as (client, topic_id):
        port = client.base_url.port
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET /v1/topics/{topic_id}/export HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            small = {"until": START.isoformat()}
            deadline = time.monotonic() + 5
            while client.get(f"/v1/topics/{topic_id}/export", params=small).status_code != 429:
                assert time.monotonic() < deadline, "the export never started"
                time.sleep(0.05)
            deadline = time.monotonic() + 10
            while client.get(f"/v1/topics/{topic_id}/export", params=small).status_code == 429:
                assert time.monotonic() < deadline, "a client that reads nothing holds its slot"
                time.sleep(0.2)
        assert "unhandled error" not in (tmp_path / "api.log").read_text()


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_topic_deleted_mid_export_cuts_the_body(fmt: str, tmp_path: Path) -> None:
    """Its rows gone, the rest of the walk reads nothing: that is not the end of the
    topic, and the file must not look complete."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with real_api(tmp_path, url, api_workers=1) as (client, topic_id):
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            read_while_deleting(client, topic_id, fmt, received)
        assert 0 < len(received) < 20_000_000
        if fmt == "ndjson":
            last = orjson.loads(bytes(received).rstrip(b"\n").rsplit(b"\n", 1)[-1])
            assert last["error"]["status"] == 404


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_store_lost_mid_stream_cuts_the_body(fmt: str, tmp_path: Path) -> None:
    with (
        temporary_database("postgresql", tmp_path) as url,
        real_api(tmp_path, url) as (
            client,
            topic_id,
        ),
    ):
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            read_while_dropping(client, topic_id, fmt, url, received)
        assert 0 < len(received) < 20_000_000
        if fmt == "ndjson":
            last = orjson.loads(bytes(received).rstrip(b"\n").rsplit(b"\n", 1)[-1])
            assert last["error"]["status"] == 503


def read_while_deleting(client: httpx.Client, topic_id: int, fmt: str, received: bytearray) -> None:
    with client.stream("GET", f"/v1/topics/{topic_id}/export", params={"format": fmt}) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            if not received:
                assert client.delete(f"/v1/topics/{topic_id}").status_code == 204
            received += chunk


def read_while_dropping(
    client: httpx.Client, topic_id: int, fmt: str, url: str, received: bytearray
) -> None:
    with client.stream("GET", f"/v1/topics/{topic_id}/export", params={"format": fmt}) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            if not received:
                drop(url)  # the database goes away while the export is under way
            received += chunk


def drop(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    threading.Thread(target=_drop, args=(dsn, parsed.database), daemon=True).start()


def _drop(dsn: str, name: str | None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
