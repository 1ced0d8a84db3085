"""The bulk loader behind ``latam publish``: HTTP retries (on ``httpx.MockTransport``, no
server) and the accounting of every line."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from latam.errors import BrokerUnavailable, InvalidRequest
from latam.loader import (
    RETRIES,
    HttpSink,
    Line,
    RejectedLine,
    Tally,
    read_records,
    run,
    to_item,
)

Reply = httpx.Response | Exception


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every back-off the loader asks for, without waiting for it."""
    asked: list[float] = []
    # The loader calls ``time.sleep``; patched for this test only, and nothing else sleeps.
    monkeypatch.setattr(time, "sleep", asked.append)
    return asked


def scripted(replies: list[Reply]) -> tuple[httpx.Client, list[httpx.Request]]:
    """A client whose transport answers with ``replies`` in order (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reply = replies[min(len(seen), len(replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply

    transport = httpx.MockTransport(handle)
    return httpx.Client(transport=transport, base_url="http://latam.test"), seen


def problem(status: int, detail: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"title": "x", "detail": detail}, headers=headers)


ACCEPTED = httpx.Response(202, json={"message_ids": ["a"]})
ITEMS: list[dict[str, Any]] = [{"data": {"n": 1}, "id": "one"}, {"data": {"n": 2}, "id": "two"}]


def test_retries_429_503_and_transport_errors_then_succeeds(sleeps: list[float]) -> None:
    client, seen = scripted(
        [
            problem(429, "slow down", **{"Retry-After": "3"}),
            problem(503, "store down"),  # no Retry-After: one second
            httpx.ConnectError("refused"),
            ACCEPTED,
        ]
    )
    with client:
        HttpSink(client, topic_id=7).send(ITEMS)
    assert len(seen) == 4
    assert sleeps == [3.0, 1.0, 0.8]  # Retry-After, its default, exponential 0.2 * 2**2
    assert all(r.method == "POST" and r.url.path == "/v1/topics/7/messages" for r in seen)
    assert orjson.loads(seen[-1].content) == {"messages": ITEMS}
    assert seen[-1].headers["content-type"] == "application/json"


def test_transport_errors_give_up_after_retries(sleeps: list[float]) -> None:
    client, seen = scripted([httpx.ReadTimeout("slow")])
    with client, pytest.raises(BrokerUnavailable, match="cannot reach the API"):
        HttpSink(client, topic_id=1).send(ITEMS)
    assert len(seen) == RETRIES
    assert len(sleeps) == RETRIES - 1
    assert max(sleeps) <= 10  # the back-off is capped


def test_503_gives_up_after_retries(sleeps: list[float]) -> None:
    client, seen = scripted([problem(503, "store down", **{"Retry-After": "2"})])
    with client, pytest.raises(BrokerUnavailable):
        HttpSink(client, topic_id=1).send(ITEMS)
    assert len(seen) == RETRIES
    assert sleeps == [2.0] * (RETRIES - 1)


def test_503_after_retries_is_unavailability_not_a_rejection(sleeps: list[float]) -> None:
    client, _seen = scripted([problem(503, "store down")])
    with client, pytest.raises(BrokerUnavailable):
        HttpSink(client, topic_id=1).send(ITEMS)


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_4xx_is_rejected_at_once(sleeps: list[float], status: int) -> None:
    client, seen = scripted([problem(status, "bad batch")])
    with client, pytest.raises(InvalidRequest) as caught:
        HttpSink(client, topic_id=1).send(ITEMS)
    assert caught.value.detail == f"HTTP {status}: bad batch"
    assert len(seen) == 1
    assert sleeps == []


def test_a_reply_without_json_still_says_its_status(sleeps: list[float]) -> None:
    client, _seen = scripted([httpx.Response(400, text="<html>nope</html>")])
    with client, pytest.raises(InvalidRequest, match=r"^HTTP 400$"):
        HttpSink(client, topic_id=1).send(ITEMS)


# -- run(): accounting ----------------------------------------------------------------------
class RecordingSink:
    """Keeps what it was sent; refuses batches that contain a ``refuse`` field."""

    def __init__(self) -> None:
        self.sent: list[list[dict[str, Any]]] = []
        self.lock = threading.Lock()

    def send(self, items: list[dict[str, Any]]) -> None:
        if any("refuse" in item["data"] for item in items):
            raise InvalidRequest("HTTP 422: refused")
        with self.lock:
            self.sent.append(items)


def lines(*records: bytes) -> Iterator[Line]:
    return read_records(io.BufferedReader(io.BytesIO(b"\n".join(records) + b"\n")))


def load(
    source: Iterator[Line], sink: RecordingSink, *, strict: bool = False, **opts: Any
) -> Tally:
    tally = Tally()
    progress: list[int] = []

    def report(seen: Tally) -> None:
        progress.append(seen.published)

    run(
        source,
        sink,
        tally,
        batch_size=2,
        concurrency=2,
        strict=strict,
        on_progress=report,
        **{"id_field": None, "max_bytes": 1000, **opts},
    )
    assert progress == sorted(progress)  # progress only ever grows
    return tally


def test_run_publishes_valid_lines_and_tallies_the_rest() -> None:
    sink = RecordingSink()
    tally = load(
        lines(b'{"n":1}', b"not json", b'{"n":2}', b"", b"[1]", b'{"n":3}', b'{"n":4}'),
        sink,
    )
    assert tally.read == 6  # the blank line is no record
    assert tally.published == 4
    assert [(r.number, r.reason.split(":")[0]) for r in tally.rejected] == [
        (2, "invalid JSON"),
        (5, "not a JSON object"),
    ]
    assert sorted(item["data"]["n"] for batch in sink.sent for item in batch) == [1, 2, 3, 4]
    assert all(len(batch) <= 2 for batch in sink.sent)


def test_run_takes_ids_from_a_field_and_rejects_lines_without_it() -> None:
    sink = RecordingSink()
    tally = load(lines(b'{"k":"a"}', b'{"other":1}', b'{"k":7}'), sink, id_field="k")
    assert tally.published == 2
    assert [r.number for r in tally.rejected] == [2]
    assert sorted(item["id"] for batch in sink.sent for item in batch) == ["7", "a"]


def test_a_refused_batch_rejects_each_of_its_lines() -> None:
    sink = RecordingSink()
    tally = load(lines(b'{"n":1}', b'{"n":2}', b'{"refuse":1}', b'{"n":4}'), sink)
    assert tally.published == 2
    assert [(r.number, r.reason) for r in tally.rejected] == [
        (3, "HTTP 422: refused"),
        (4, "HTTP 422: refused"),
    ]


def test_strict_stops_on_the_first_invalid_line() -> None:
    sink = RecordingSink()
    with pytest.raises(RejectedLine) as caught:
        load(lines(b'{"n":1}', b'{"n":2}', b"oops", b'{"n":4}'), sink, strict=True)
    assert caught.value.rejection.number == 3
    assert 4 not in [item["data"]["n"] for batch in sink.sent for item in batch]


def test_strict_stops_on_a_refused_batch() -> None:
    sink = RecordingSink()
    with pytest.raises(RejectedLine) as caught:
        load(lines(b'{"refuse":1}', b'{"n":2}'), sink, strict=True)
    assert caught.value.rejection.number == 1
    assert caught.value.rejection.reason == "HTTP 422: refused"


def test_run_over_http_counts_a_refused_batch(sleeps: list[float]) -> None:
    client, seen = scripted([ACCEPTED, problem(422, "schema_violation")])
    tally = Tally()
    with client:
        run(
            lines(b'{"n":1}', b'{"n":2}', b'{"n":3}'),
            HttpSink(client, topic_id=3),
            tally,
            batch_size=2,
            concurrency=1,
            strict=False,
            on_progress=lambda _t: None,
            id_field=None,
            max_bytes=1000,
        )
    assert len(seen) == 2
    assert tally.published == 2
    assert [(r.number, r.reason) for r in tally.rejected] == [(3, "HTTP 422: schema_violation")]


def test_a_json_array_is_read_as_records() -> None:
    records = list(read_records(io.BufferedReader(io.BytesIO(b' [{"a":1}, {"b":2}]'))))
    assert [(r.number, orjson.loads(r.raw)) for r in records] == [(1, {"a": 1}), (2, {"b": 2})]


def test_ids_are_fixed_before_the_first_try(sleeps: list[float]) -> None:
    """A batch retried after a timeout carries the ids of its first try, so a first try
    that was stored after all is not stored twice under new ids."""
    client, seen = scripted([httpx.ReadTimeout("no answer"), ACCEPTED])
    items = [to_item(Line(n, b'{"n": %d}' % n), id_field=None, max_bytes=1000) for n in (1, 2)]
    with client:
        HttpSink(client, topic_id=1).send(items)
    first, second = (orjson.loads(request.content)["messages"] for request in seen)
    assert first == second
    assert len({m["id"] for m in first}) == 2


def test_numbers_travel_exactly_as_written(sleeps: list[float]) -> None:
    raw = b'{"big": 123456789012345678901234567890, "pi": 3.14159265358979323846264, "n": 1}'
    client, seen = scripted([ACCEPTED])
    with client:
        HttpSink(client, topic_id=1).send([to_item(Line(1, raw), id_field=None, max_bytes=999)])
    sent = seen[0].content
    assert b'"big":123456789012345678901234567890' in sent
    assert b'"pi":3.14159265358979323846264' in sent
