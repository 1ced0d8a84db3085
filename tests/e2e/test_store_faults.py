"""Store faults: every server-side connection is killed mid-stream, twice, while
``latam api`` and ``latam worker`` run as separate processes. Every accepted message must
end up stored exactly once, and the worker must recover without a restart."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pymysql
import pytest
from sqlalchemy.engine import make_url

from tests.databases import temporary_database
from tests.support import (
    MYSQL_URL,
    POSTGRES_URL,
    LatamProcess,
    create_topic,
    free_port,
    latam_env,
    read_all,
    wait_http,
)

pytestmark = pytest.mark.slow

TOTAL = 3000
BATCH = 100
KILL_AFTER_BATCHES = (10, 20)  # kill every connection after these many batches


def kill_postgres_connections(database: str) -> int:
    """pg_terminate_backend every session on ``database`` but this one; how many died."""
    dsn = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def kill_mysql_connections(database: str) -> int:
    """KILL every connection on ``database`` but this one; how many died."""
    url = make_url(MYSQL_URL)
    params = {"host": url.host or "127.0.0.1", "port": url.port or 3306}
    with (
        pymysql.connect(user=url.username or "root", password=url.password or "", **params) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
            (database,),
        )
        killed = 0
        for (connection_id,) in cursor.fetchall():
            try:
                cursor.execute(f"KILL {int(connection_id)}")
                killed += 1
            except pymysql.err.OperationalError:
                pass  # it closed by itself in the meantime
    return killed


KILLERS: dict[str, Callable[[str], int]] = {
    "postgresql": kill_postgres_connections,
    "mysql": kill_mysql_connections,
}


@dataclass
class Deployment:
    client: httpx.Client
    api: LatamProcess
    worker: LatamProcess
    database: str


@pytest.fixture(params=sorted(KILLERS))
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    with temporary_database(request.param, tmp_path) as db_url:
        port = free_port()
        env = latam_env(tmp_path, database_url=db_url, port=port)
        migrate = [sys.executable, "-m", "latam", "migrate"]
        subprocess.run(migrate, env=env, check=True, capture_output=True, timeout=60)
        api = LatamProcess(["api"], env, tmp_path / "api.log").start()
        worker = LatamProcess(["worker"], env, tmp_path / "worker.log").start()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/readyz", proc=api)
            with httpx.Client(base_url=base, timeout=30) as client:
                yield Deployment(client, api, worker, make_url(db_url).database or "")
        finally:
            worker.terminate()
            api.terminate()


def publish(client: httpx.Client, topic_id: int, ids: list[str]) -> tuple[list[str], int]:
    """Publish one batch, retrying the same ids on 503; returns accepted ids and retries."""
    batch = {"messages": [{"id": i, "data": {"id": i}} for i in ids]}
    for attempt in range(20):
        response = client.post(f"/v1/topics/{topic_id}/messages", json=batch)
        if response.status_code == 202:
            return list(response.json()["message_ids"]), attempt
        assert response.status_code == 503, response.text
        time.sleep(0.5)
    return [], 20


def test_connections_killed_mid_stream_lose_and_duplicate_nothing(
    deployment: Deployment, request: pytest.FixtureRequest
) -> None:
    client, kill = deployment.client, KILLERS[request.node.callspec.params["deployment"]]
    topic_id = create_topic(client)
    accepted: list[str] = []
    killed: list[int] = []
    retries = 0
    for number, start in enumerate(range(0, TOTAL, BATCH), start=1):
        ids, retried = publish(client, topic_id, [f"m{n}" for n in range(start, start + BATCH)])
        accepted.extend(ids)
        retries += retried
        if number in KILL_AFTER_BATCHES:
            killed.append(kill(deployment.database))

    stored = wait_for_ids(client, topic_id, len(accepted), timeout=180)
    stored_ids = [m["id"] for m in stored]
    figures = {
        "accepted": len(accepted),
        "stored": len(set(stored_ids)),
        "duplicated": len(stored_ids) - len(set(stored_ids)),
        "lost": len(set(accepted) - set(stored_ids)),
        "killed_connections": killed,
        "publish_retries": retries,
        "worker_retries": deployment.worker.log().count("batch returned for retry"),
    }
    print(f"store fault figures: {figures}")
    assert len(accepted) == TOTAL, figures
    assert all(count > 0 for count in killed), figures
    assert figures["lost"] == 0, figures
    assert figures["duplicated"] == 0, figures
    assert sorted(stored_ids) == sorted(accepted), figures
    assert deployment.worker.proc is not None
    assert deployment.worker.proc.poll() is None, deployment.worker.log()[-3000:]
    assert deployment.api.proc is not None
    assert deployment.api.proc.poll() is None, deployment.api.log()[-3000:]


def wait_for_ids(
    client: httpx.Client, topic_id: int, expected: int, *, timeout: float
) -> list[dict[str, object]]:
    """Every stored message once ``expected`` are there (or what is there at the deadline)."""
    deadline = time.monotonic() + timeout
    items: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        try:
            items = read_all(client, topic_id)
        except (AssertionError, httpx.HTTPError):
            items = []  # a read may hit a connection that was just killed
        if len(items) >= expected:
            return items
        time.sleep(0.5)
    return items
