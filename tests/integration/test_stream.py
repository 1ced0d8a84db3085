"""The live tail through a real ``latam serve`` over real sockets: resume across a killed
connection with no gap and no repeat (SQLite and PostgreSQL), filters, heartbeats, the
connection limits, a slow consumer cut off, refusals before streaming, and ``latam tail``."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from latam.domain import Position
from tests.databases import temporary_database
from tests.support import (
    LatamProcess,
    create_topic,
    free_port,
    latam_env,
    read_all,
    running_serve,
    unique,
    wait_for_count,
    wait_http,
)

TOKEN = f"lt_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
# One API process: the connection limits are per process.
QUICK = {"api_workers": 1, "stream_heartbeat_seconds": 0.3, "stream_poll_seconds": 0.05}


@dataclass
class Event:
    id: str | None
    event: str
    data: Any


@dataclass
class Stream:
    """Events of one SSE response, parsed as they arrive; comments counted."""

    response: httpx.Response
    comments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lines = self.response.iter_lines()

    def next(self) -> Event:
        fields: dict[str, str] = {}
        for line in self.lines:
            if line.startswith(":"):
                self.comments.append(line)
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif "data" in fields:
                return Event(
                    fields.get("id"), fields.get("event", "message"), orjson.loads(fields["data"])
                )
        raise EOFError("the stream ended")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, httpx.Client, Path]]:
    data_dir = tmp_path_factory.mktemp("stream")
    with (
        running_serve(data_dir, **QUICK) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        yield base, client, data_dir


def publish(client: httpx.Client, topic_id: int, items: list[dict[str, Any]]) -> None:
    messages = [{"data": item} for item in items]
    response = client.post(f"/v1/topics/{topic_id}/messages", json={"messages": messages})
    assert response.status_code == 202, response.text


def open_stream(client: httpx.Client, topic_id: int, **kwargs: Any) -> Any:
    timeout = httpx.Timeout(10.0, read=10.0)
    return client.stream("GET", f"/v1/topics/{topic_id}/stream", timeout=timeout, **kwargs)


class Publisher(threading.Thread):
    """Publishes numbered messages in small batches until stopped: the topic keeps
    growing while a reader disconnects and comes back."""

    def __init__(self, base: str, topic_id: int) -> None:
        super().__init__(daemon=True)
        self.base, self.topic_id = base, topic_id
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                publish(client, self.topic_id, [{"n": self.sent + i} for i in range(20)])
                self.sent += 20
                time.sleep(0.02)


def follow_until(stream: Stream, ids: list[str], count: int) -> str:
    """Append message ids until ``count`` are held; the last event id."""
    last = ""
    while len(ids) < count:
        event = stream.next()
        assert event.event == "message", event
        ids.append(event.data["id"])
        last = event.id or ""
    return last


def resume_without_gap_or_repeat(base: str, client: httpx.Client) -> None:
    topic_id = create_topic(client)
    publish(client, topic_id, [{"n": -i} for i in range(1, 51)])  # stored before the stream
    wait_for_count(client, topic_id, 50)
    publisher = Publisher(base, topic_id)
    publisher.start()
    ids: list[str] = []
    try:
        with open_stream(client, topic_id, params={"from": "start"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            last = follow_until(Stream(response), ids, 300)
        # Killed mid-stream (the socket is closed); messages keep arriving meanwhile.
        time.sleep(0.5)
        with open_stream(client, topic_id, headers={"Last-Event-ID": last}) as response:
            last = follow_until(Stream(response), ids, 700)
        time.sleep(0.3)
        # Again, with ?cursor= this time, and a stale from=start that the cursor beats.
        with open_stream(client, topic_id, params={"cursor": last, "from": "start"}) as response:
            stream = Stream(response)
            follow_until(stream, ids, 900)
            publisher.stop.set()
            publisher.join()
            total = 50 + publisher.sent
            wait_for_count(client, topic_id, total)
            follow_until(stream, ids, total)
    finally:
        publisher.stop.set()
    stored = [m["id"] for m in read_all(client, topic_id)]
    assert len(ids) == len(set(ids)), "an event was repeated across a disconnect"
    assert ids == stored, "the stream is not the store's ingest order, gap-free"


def test_resume_after_a_killed_connection_loses_and_repeats_nothing(
    served: tuple[str, httpx.Client, Path],
) -> None:
    base, client, _ = served
    resume_without_gap_or_repeat(base, client)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_resume_on_a_server_store(kind: str, tmp_path: Path) -> None:
    with (
        temporary_database(kind, tmp_path) as url,
        running_serve(tmp_path, database_url=url, **QUICK) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        resume_without_gap_or_repeat(base, client)


def test_the_stream_starts_at_the_tail_by_default(served: tuple[str, httpx.Client, Path]) -> None:
    _, client, _ = served
    topic_id = create_topic(client)
    publish(client, topic_id, [{"old": True}])
    wait_for_count(client, topic_id, 1)
    with open_stream(client, topic_id) as response:
        stream = Stream(response)
        publish(client, topic_id, [{"new": 1}, {"new": 2}])
        assert [stream.next().data["data"] for _ in range(2)] == [{"new": 1}, {"new": 2}]


def test_filters_apply_and_bind_the_cursor(served: tuple[str, httpx.Client, Path]) -> None:
    _, client, _ = served
    topic_id = create_topic(client)
    items = [{"kind": "a" if i % 3 == 0 else "b", "n": i, "deep": {"v": i}} for i in range(60)]
    publish(client, topic_id, items)
    wait_for_count(client, topic_id, 60)
    params = {"from": "start", "data.kind": "eq.a", "data.deep.v": "gte.10"}
    with open_stream(client, topic_id, params=params) as response:
        stream = Stream(response)
        events = [stream.next() for _ in range(16)]
        publish(
            client, topic_id, [{"kind": "b", "n": 100}, {"kind": "a", "n": 101, "deep": {"v": 99}}]
        )
        events.append(stream.next())
    assert [e.data["data"]["n"] for e in events] == [n for n in range(12, 60, 3)] + [101]
    # The cursor of a filtered stream carries its filters: other filters are refused.
    refused = client.get(
        f"/v1/topics/{topic_id}/stream", params={"cursor": events[3].id, "data.kind": "eq.b"}
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["field"] == "cursor"


def test_idle_stream_sends_heartbeats(served: tuple[str, httpx.Client, Path]) -> None:
    _, client, _ = served
    topic_id = create_topic(client)
    with open_stream(client, topic_id) as response:
        stream = Stream(response)
        started = time.monotonic()
        for line in stream.lines:
            if line.startswith(":"):
                stream.comments.append(line)
            if len(stream.comments) == 3:
                break
        elapsed = time.monotonic() - started
    assert stream.comments == [": keep-alive"] * 3
    assert 0.6 <= elapsed < 3, elapsed  # every 0.3 s


@pytest.mark.parametrize(
    ("params", "headers", "status", "field"),
    [
        ({"data.flight": "like.LA%"}, {}, 400, "data.flight"),
        ({"data..x": "eq.1"}, {}, 400, "data..x"),
        ({"flight": "eq.1"}, {}, 400, "flight"),
        ({"since": "2024-01-01T00:00:00Z"}, {}, 400, "since"),
        ({"cursor": "not-a-cursor"}, {}, 422, "cursor"),
        # A bad Last-Event-ID is named as the header the client sent, not as a cursor.
        ({}, {"Last-Event-ID": "bm9wZQ"}, 422, "Last-Event-ID"),
    ],
)
def test_bad_requests_are_problems_before_streaming(
    served: tuple[str, httpx.Client, Path],
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    _, client, _ = served
    topic_id = create_topic(client)
    response = client.get(f"/v1/topics/{topic_id}/stream", params=params, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == field


def test_a_last_event_id_of_other_filters_names_the_header(
    served: tuple[str, httpx.Client, Path],
) -> None:
    _, client, _ = served
    topic_id = create_topic(client)
    unfiltered = Position(0).encode(topic_id)
    response = client.get(
        f"/v1/topics/{topic_id}/stream",
        params={"data.n": "gt.1"},
        headers={"Last-Event-ID": unfiltered},
    )
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "Last-Event-ID"
    # The same cursor as ?cursor= is named as the query parameter.
    response = client.get(
        f"/v1/topics/{topic_id}/stream", params={"data.n": "gt.1", "cursor": unfiltered}
    )
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "cursor"


def test_missing_topic_is_404_and_deleted_topic_ends_the_stream(
    served: tuple[str, httpx.Client, Path],
) -> None:
    _, client, _ = served
    assert client.get("/v1/topics/987654/stream").status_code == 404
    topic_id = create_topic(client)
    with open_stream(client, topic_id) as response:
        stream = Stream(response)
        assert client.delete(f"/v1/topics/{topic_id}").status_code == 204
        event = stream.next()
        assert event.event == "error"
        assert event.data["status"] == 404
        assert event.data["type"].endswith("/topic-deleted")
        with pytest.raises(EOFError):
            stream.next()


def cli_key(data_dir: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "latam", "keys", "create", "--name", "second", "--scope", "read"],
        env=env,
        capture_output=True,
        check=True,
    )
    return str(orjson.loads(done.stdout)["api_key"])


def test_connections_are_bounded_per_key_and_per_process(tmp_path: Path) -> None:
    limits = {"stream_max_per_key": 2, "stream_max_connections": 3}
    with running_serve(tmp_path, auth="on", bootstrap_api_key=TOKEN, **QUICK, **limits) as (
        base,
        _proc,
    ):
        other = cli_key(tmp_path, latam_env(tmp_path))
        first = httpx.Client(
            base_url=base, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        second = httpx.Client(
            base_url=base, timeout=10, headers={"Authorization": f"Bearer {other}"}
        )
        with first, second:
            topic_id = create_topic(first)
            path = f"/v1/topics/{topic_id}/stream"
            opened = [first.stream("GET", path), first.stream("GET", path)]
            try:
                for stream in opened:
                    assert stream.__enter__().status_code == 200
                over_key = first.get(path)
                assert over_key.status_code == 429, over_key.text
                assert over_key.headers["content-type"] == "application/problem+json"
                assert int(over_key.headers["retry-after"]) > 0
                assert "per API key" in over_key.json()["detail"]
                third = second.stream("GET", path)
                assert third.__enter__().status_code == 200
                opened.append(third)
                over_process = second.get(path)
                assert over_process.status_code == 429, over_process.text
                assert "streams open" in over_process.json()["detail"]
            finally:
                for stream in opened:
                    stream.__exit__(None, None, None)
            # Closed streams give their slots back.
            deadline = time.monotonic() + 5
            while True:
                with first.stream("GET", path) as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline, again.status_code
                time.sleep(0.1)


def test_a_consumer_that_stops_reading_is_cut_with_an_error(tmp_path: Path) -> None:
    """The client reads nothing while 8 MB are published: more than the socket buffers
    and the 64 KiB queue hold, so the server ends the stream instead of buffering. The
    client then reads what was sent: a gap-free prefix, then ``event: error``."""
    settings = {**QUICK, "stream_queue_bytes": 65536}
    with (
        running_serve(tmp_path, **settings) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        topic_id = create_topic(client)
        port = int(base.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        request = f"GET /v1/topics/{topic_id}/stream HTTP/1.1\r\nHost: x\r\nConnection: close"
        sock.sendall(f"{request}\r\n\r\n".encode())
        time.sleep(0.5)  # the stream is open at the tail
        pad = "x" * 2000
        for batch in range(16):
            publish(client, topic_id, [{"n": batch * 250 + i, "pad": pad} for i in range(250)])
        wait_for_count(client, topic_id, 4000)
        time.sleep(1)
        sock.settimeout(10)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        sock.close()
        body = bytes(received).split(b"\r\n\r\n", 1)[1]
        assert b"event: error" in body
        error = body[body.index(b"event: error") :].split(b"data: ", 1)[1].split(b"\n", 1)[0]
        assert b'"status":429' in error
        assert b"stream-too-slow" in error
        ns = [
            orjson.loads(line[len(b"data: ") :])["data"]["n"]
            for line in body.replace(b"\r\n", b"\n").split(b"\n")
            if line.startswith(b'data: {"id"')
        ]
        stored = [m["data"]["n"] for m in read_all(client, topic_id)]
        assert 0 < len(ns) < 4000
        assert ns == stored[: len(ns)]


def test_a_client_that_reads_nothing_is_dropped_quietly(tmp_path: Path) -> None:
    """A client that takes nothing for LATAM_STREAM_SEND_TIMEOUT_SECONDS is dropped: its
    slot comes back (the open-streams gauge is 0 again) and the drop is logged as such,
    never as an unhandled error."""
    settings = {**QUICK, "stream_send_timeout_seconds": 1, "stream_queue_bytes": 1 << 24}
    with (
        running_serve(tmp_path, **settings) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        topic_id = create_topic(client)
        pad = "x" * 2000
        for batch in range(8):
            publish(client, topic_id, [{"n": batch * 250 + i, "pad": pad} for i in range(250)])
        wait_for_count(client, topic_id, 2000)
        port = int(base.rsplit(":", 1)[1])
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            request = f"GET /v1/topics/{topic_id}/stream?from=start HTTP/1.1\r\nHost: x"
            sock.sendall(f"{request}\r\n\r\n".encode())
            log_path, deadline = tmp_path / "serve.log", time.monotonic() + 15
            while not any(
                line in log_path.read_text() for line in ("read nothing", "unhandled error")
            ):
                assert time.monotonic() < deadline, "the stream was never dropped"
                time.sleep(0.2)
        log = log_path.read_text()
        assert "the client read nothing" in log
        assert "unhandled error" not in log
        assert "latam_streams_open 0.0" in client.get("/metrics").text


def test_latam_tail_prints_messages_and_names_a_bad_filter(
    served: tuple[str, httpx.Client, Path],
) -> None:
    base, client, data_dir = served
    name = unique("tail-")
    topic_id = create_topic(client, name)
    publish(client, topic_id, [{"flight": "LA800", "n": 1}, {"flight": "LA900", "n": 2}])
    wait_for_count(client, topic_id, 2)
    env = latam_env(data_dir)
    command = [sys.executable, "-m", "latam", "tail", name, "--url", base]
    with subprocess.Popen(
        [*command, "data.flight=eq.LA800", "--from-start"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            assert proc.stdout is not None
            first = orjson.loads(proc.stdout.readline())
            more = [{"flight": "LA900", "n": 3}, {"flight": "LA800", "n": 4}]
            publish(client, topic_id, more)
            second = orjson.loads(proc.stdout.readline())
            assert [first["data"]["n"], second["data"]["n"]] == [1, 4]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    bad = subprocess.run(
        [*command, "data.flight=like.LA"], env=env, capture_output=True, timeout=30
    )
    assert bad.returncode == 1
    assert bad.stderr.decode().startswith("latam: error: ")
    assert "data.flight" in bad.stderr.decode()


def test_latam_tail_resumes_across_a_server_restart(tmp_path: Path) -> None:
    """The server goes away mid-stream and comes back: ``latam tail`` reconnects with
    the last event's id and prints what was stored meanwhile, nothing twice."""
    port = free_port()
    env = latam_env(tmp_path, port=port, **QUICK)
    base = f"http://127.0.0.1:{port}"

    def start() -> LatamProcess:
        proc = LatamProcess(["serve"], env, tmp_path / "serve.log").start()
        wait_http(f"{base}/readyz", proc=proc)
        return proc

    server = start()
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            topic_id = create_topic(client)
            publish(client, topic_id, [{"n": 1}, {"n": 2}])
            command = [sys.executable, "-m", "latam", "tail", str(topic_id), "--from-start"]
            with subprocess.Popen(
                [*command, "--url", base], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            ) as tail:
                try:
                    assert tail.stdout is not None
                    seen = [orjson.loads(tail.stdout.readline())["data"]["n"] for _ in range(2)]
                    server.terminate()
                    server = start()
                    publish(client, topic_id, [{"n": 3}, {"n": 4}])
                    seen += [orjson.loads(tail.stdout.readline())["data"]["n"] for _ in range(2)]
                    assert seen == [1, 2, 3, 4]
                    tail.send_signal(signal.SIGINT)
                    assert tail.wait(10) == 0
                finally:
                    if tail.poll() is None:
                        tail.kill()
    finally:
        server.terminate()
