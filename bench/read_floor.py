"""The read floor of each store: what a bare FastAPI route answers on this machine when it
does only the database's part of a page, so that each store's read figure can be judged
against what the stack itself allows, in the same run.

The same `wrk -t2 -c16` load as the reads figure (``bench.reads``: random cursors,
``limit=100``) on uvicorn with as many processes as `latam serve` starts API processes,
serving an app of one route: FastAPI validates the path and query parameters, the cursor
is decoded, and then either nothing more (``fixed``: a 100-message page held in memory,
the framework's floor) or the simplest statement that returns the page's 100 messages as
JSON, on the driver latam uses for that store:

- PostgreSQL: one prepared ``string_agg`` over the index range, with latam's row text
  (``storage.server_pages.PG_ROW``), on psycopg's async pool on the event loop;
- MariaDB: one ``GROUP_CONCAT`` with latam's row text (``MYSQL_ROW``), on PyMySQL
  connections in threads (as many as latam's page-read pool);
- SQLite: the rows on a read-only connection on the event loop, spliced into
  ``storage.pages.ROW``.

No byte budget, no "more rows" answer, no topic check, no authentication, rate limit,
metrics, tracing or logs: everything latam adds is left out, so latam's figure over this
one is the share of the machine that latam's own layers leave to the database.

    READ_FLOOR_URL=postgresql://... READ_FLOOR_MODE=page uvicorn bench.read_floor:app
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import AbstractContextManager
from typing import Annotated, Any

import httpx
from anyio import CapacityLimiter
from anyio.to_thread import run_sync
from fastapi import FastAPI, Query
from starlette.responses import Response

from bench.common import Figure, uvicorn_app
from latam.domain import decode_cursor
from latam.settings import Settings
from latam.storage.dialects import SEQ_INDEX
from latam.storage.pages import ROW
from latam.storage.server_pages import MYSQL_ROW, PG_ROW

PG_PAGE = (
    f"SELECT '[' || coalesce(string_agg({PG_ROW}, ',' ORDER BY m.seq), '') || ']' FROM ("
    "SELECT * FROM messages WHERE topic_id >= %(topic)s AND topic_id <= %(topic)s"
    " AND seq > %(after)s ORDER BY topic_id, seq LIMIT %(limit)s) AS m"
)
MYSQL_PAGE = (
    "SELECT CONCAT('[', COALESCE(GROUP_CONCAT({row} ORDER BY m.seq SEPARATOR ','), ''), ']')"
    f" FROM (SELECT * FROM messages FORCE INDEX ({SEQ_INDEX}) WHERE topic_id = %(topic)s"
    " AND seq > %(after)s ORDER BY seq LIMIT %(limit)s) AS m"
).replace("{row}", MYSQL_ROW.replace("%", "%%"))  # PyMySQL's pyformat: a literal % doubled
SQLITE_PAGE = (
    "SELECT message_id, data, attributes, published_at, ingested_at, schema_version"
    " FROM messages WHERE topic_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
MESSAGE = (
    b'{"id":"m1","data":{"flight":"LA800","delay_min":12,"note":"' + b"x" * 80 + b'"},'
    b'"attributes":{},"published_at":"2026-12-06T10:00:00.000000Z",'
    b'"ingested_at":"2026-12-06T10:00:00.000001Z","schema_version":null}'
)
FIXED = b"[" + b",".join([MESSAGE] * 100) + b"]"


class Pages:
    """The page of the store at ``url`` (``mode`` "page") or the fixed one."""

    def __init__(self, url: str, mode: str) -> None:
        self.url, self.mode = url, mode
        self.pool: Any = None
        self.local = threading.local()
        self.limiter = CapacityLimiter(Settings().db_pool_size)

    async def page(self, topic: int, after: int, limit: int) -> bytes:
        if self.mode == "fixed":
            return FIXED
        values = {"topic": topic, "after": after, "limit": limit}
        if self.url.startswith("postgresql"):
            return await self._postgres(values)
        if self.url.startswith("mysql"):
            return await run_sync(self._mysql, values, limiter=self.limiter)
        return self._sqlite(topic, after, limit)

    async def _postgres(self, values: dict[str, int]) -> bytes:
        if self.pool is None:
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(
                self.url, min_size=1, max_size=15, kwargs={"autocommit": True}, open=False
            )
            await pool.open()
            self.pool = pool
        async with self.pool.connection() as conn:
            row = await (await conn.execute(PG_PAGE, values, prepare=True)).fetchone()
        return str(row[0]).encode()

    def _mysql(self, values: dict[str, int]) -> bytes:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            import pymysql
            from sqlalchemy.engine import make_url

            url = make_url(self.url)
            conn = pymysql.connect(
                host=url.host,
                port=url.port or 3306,
                user=url.username,
                password=url.password or "",
                database=url.database,
                charset="utf8mb4",
                autocommit=True,
                init_command="SET SESSION group_concat_max_len = 33554432",
            )
            self.local.conn = conn
        with conn.cursor() as cursor:
            cursor.execute(MYSQL_PAGE, values)
            (page,) = cursor.fetchone()
        return page.encode() if isinstance(page, str) else bytes(page)

    def _sqlite(self, topic: int, after: int, limit: int) -> bytes:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            path = self.url.removeprefix("sqlite:///")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            conn.text_factory = bytes
            self.local.conn = conn
        rows = conn.execute(SQLITE_PAGE, (topic, after, limit)).fetchall()
        return (
            b"["
            + b",".join(
                ROW
                % (
                    message_id,
                    data,
                    attributes,
                    *published.split(b" "),
                    *ingested.split(b" "),
                    b"null" if version is None else b"%d" % version,
                )
                for message_id, data, attributes, published, ingested, version in rows
            )
            + b"]"
        )


app = FastAPI()
pages = Pages(os.environ.get("READ_FLOOR_URL", ""), os.environ.get("READ_FLOOR_MODE", "fixed"))


@app.get("/v1/topics/{topic_id}/messages")
async def read(
    topic_id: int,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    after = decode_cursor(cursor, topic_id=topic_id) if cursor else 0
    return Response(await pages.page(topic_id, after, limit), media_type="application/json")


def serve_floor(url: str, mode: str) -> AbstractContextManager[str]:
    """The bare app, in as many processes as `latam serve` starts."""
    driver_url = url.replace("+psycopg", "").replace("+pymysql", "")
    env = {**os.environ, "READ_FLOOR_URL": driver_url, "READ_FLOOR_MODE": mode}
    probe = "/v1/topics/1/messages?limit=1"
    return uvicorn_app("bench.read_floor:app", Settings().api_processes, probe=probe, env=env)


def check_same_page(base: str, floor: str, topic_id: int) -> None:
    """The floor answers the bytes latam answers for a page (its rows, not its cursor)."""
    ours = httpx.get(f"{base}/v1/topics/{topic_id}/messages?limit=100", timeout=30)
    theirs = httpx.get(f"{floor}/v1/topics/{topic_id}/messages?limit=100", timeout=30)
    rows = ours.content.partition(b'{"data":')[2].rpartition(b',"next_cursor"')[0]
    if not rows or rows != theirs.content:
        raise RuntimeError(
            f"the read floor does not answer the page latam answers ({len(rows):,} bytes from"
            f" latam, {len(theirs.content):,} from the floor, which begin {theirs.content[:60]!r})"
        )


def measure(
    label: str, url: str, base: str, topic_id: int, total: int, runs: int, seconds: int
) -> list[Figure]:
    """The framework's floor and the store's, on the topic latam's reads were measured on
    (``base`` serves it, to check that the floor reads the same page)."""
    from bench.reads import run_wrk

    figures: list[Figure] = []
    for mode, name in (("fixed", "framework"), ("page", "store")):
        with serve_floor(url, mode) as floor:
            if mode == "page":
                check_same_page(base, floor, topic_id)
            samples = [run_wrk(floor, topic_id, total, seconds=seconds) for _ in range(runs)]
        for rps, p50, p99, _errors in samples:
            print(
                f"  read floor ({name}), {label}: {rps:,.0f} req/s, p50 {p50:.2f} ms,"
                f" p99 {p99:.1f} ms"
            )
        figures += [
            Figure(f"Read floor ({name}), {label}", "requests/s", [s[0] for s in samples]),
            Figure(f"Read floor ({name}) p99, {label}", "ms", [s[2] for s in samples]),
        ]
    return figures
