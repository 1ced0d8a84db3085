"""Bulk loading for ``latam publish``: read JSON Lines or a JSON array, publish in batches
over HTTP or straight to the broker, and account for every line."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import httpx
import orjson

from latam.domain import (
    OutboundMessage,
    dumps_exact,
    encode_data,
    loads_exact,
    new_message_id,
    utcnow,
    validate_message_id,
)
from latam.errors import BrokerUnavailable, InvalidMessage, InvalidRequest, NotFound

RETRIES = 8  # attempts per batch on 429/503/connection errors, with backoff


@dataclass(frozen=True, slots=True)
class Line:
    """One input record: its line number (or array index + 1) and raw bytes."""

    number: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    number: int
    reason: str


@dataclass
class Tally:
    read: int = 0
    published: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    bytes_read: int = 0


class RejectedLine(Exception):
    """A line that cannot become a message; ``--strict`` stops on the first one."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"line {rejection.number}: {rejection.reason}")
        self.rejection = rejection


def read_records(stream: IO[bytes]) -> Iterator[Line]:
    """JSON Lines, or one JSON array of objects when the input starts with ``[``."""
    first = stream.peek(64)[:64] if hasattr(stream, "peek") else b""
    if first.lstrip().startswith(b"["):
        records = loads_exact(stream.read())
        for index, item in enumerate(records if isinstance(records, list) else [records], 1):
            yield Line(index, dumps_exact(item))
        return
    for number, raw in enumerate(stream, start=1):
        if raw.strip():
            yield Line(number, raw)


def to_item(line: Line, *, id_field: str | None, max_bytes: int) -> dict[str, Any]:
    """Parse and validate one record into a publish item, or raise RejectedLine."""
    try:
        data = loads_exact(line.raw)
    except ValueError as exc:
        raise RejectedLine(Rejection(line.number, f"invalid JSON: {exc}")) from exc
    if not isinstance(data, dict):
        raise RejectedLine(Rejection(line.number, "not a JSON object"))
    try:
        encode_data(data, max_bytes=max_bytes)
        # Every record gets its id here, before its first try: a batch retried after a
        # timeout carries the same ids, so whatever the first try stored is not stored
        # twice (were the server to mint ids, each try would get new ones).
        item: dict[str, Any] = {"data": data, "id": new_message_id()}
        if id_field is not None:
            if id_field not in data:
                raise InvalidMessage(f"field {id_field!r} is missing", reason="invalid_id")
            item["id"] = validate_message_id(str(data[id_field]))
    except InvalidMessage as exc:
        raise RejectedLine(Rejection(line.number, exc.detail)) from exc
    return item


class Sink(Protocol):
    """Where batches go; returns per-batch rejections (a whole batch refused)."""

    def send(self, items: list[dict[str, Any]]) -> None: ...


def http_topic_id(
    client: httpx.Client,
    name: str,
    *,
    create: bool,
    retention_seconds: int | None = None,
    hint: str = " (use --create)",
) -> int:
    """The id of topic ``name`` through the API (``create``: made when missing, with
    ``retention_seconds`` when given; otherwise NotFound, with ``hint``)."""
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/topics", params=params)
        page.raise_for_status()
        body = page.json()
        for topic in body["data"]:
            if topic["name"] == name:
                return int(topic["id"])
        if not (cursor := body["next_cursor"]):
            break
    if not create:
        raise NotFound(f"topic {name!r} does not exist{hint}")
    wanted: dict[str, Any] = {"name": name}
    if retention_seconds is not None:
        wanted["retention_seconds"] = retention_seconds
    created = client.post("/v1/topics", json=wanted)
    created.raise_for_status()
    return int(created.json()["id"])


class HttpSink:
    """POSTs batches to ``/v1/topics/{id}/messages``, retrying 429/503 and network errors."""

    def __init__(self, client: httpx.Client, topic_id: int) -> None:
        self.client = client
        self.path = f"/v1/topics/{topic_id}/messages"

    def send(self, items: list[dict[str, Any]]) -> None:
        body = b'{"messages":[%s]}' % b",".join(_message_json(item) for item in items)
        headers = {"content-type": "application/json"}
        for attempt in range(RETRIES):
            try:
                response = self.client.post(self.path, content=body, headers=headers)
            except httpx.TransportError as exc:
                if attempt == RETRIES - 1:
                    raise BrokerUnavailable(f"cannot reach the API: {exc}") from exc
                time.sleep(min(0.2 * 2**attempt, 10))
                continue
            if response.status_code == 202:
                return
            if response.status_code in (429, 503):
                if attempt == RETRIES - 1:  # unavailable, not a rejection of the data
                    raise BrokerUnavailable(f"the API kept answering {response.status_code}")
                time.sleep(float(response.headers.get("retry-after", 1)))
                continue
            raise InvalidRequest(_problem_detail(response))
        raise BrokerUnavailable("the API could not be reached")  # not reached: RETRIES > 0


def _message_json(item: dict[str, Any]) -> bytes:
    """One message of a publish request, its numbers exactly as read."""
    return b'{"id":%s,"data":%s}' % (orjson.dumps(item["id"]), dumps_exact(item["data"]))


def _problem_detail(response: httpx.Response) -> str:
    try:
        return f"HTTP {response.status_code}: {response.json().get('detail', '')}"
    except ValueError:
        return f"HTTP {response.status_code}"


class BrokerSink:
    """Publishes straight to the configured broker (``--direct``)."""

    def __init__(
        self, publish: Callable[[list[OutboundMessage]], None], topic: str, topic_id: int
    ) -> None:
        self.publish = publish
        self.topic = topic
        self.topic_id = topic_id

    def send(self, items: list[dict[str, Any]]) -> None:
        now = utcnow()
        self.publish(
            [
                OutboundMessage(
                    topic=self.topic,
                    topic_id=self.topic_id,
                    message_id=item.get("id") or new_message_id(),
                    body=dumps_exact(item["data"]),
                    attributes={},
                    published_at=now,
                )
                for item in items
            ]
        )


def batches(
    lines: Iterable[Line], tally: Tally, *, size: int, strict: bool, **opts: Any
) -> Iterator[tuple[list[Line], list[dict[str, Any]]]]:
    """Group valid records into batches; invalid ones are tallied (or raised when strict)."""
    chunk_lines: list[Line] = []
    chunk: list[dict[str, Any]] = []
    for line in lines:
        tally.read += 1
        tally.bytes_read += len(line.raw)
        try:
            chunk.append(to_item(line, **opts))
            chunk_lines.append(line)
        except RejectedLine as exc:
            if strict:
                raise
            tally.rejected.append(exc.rejection)
        if len(chunk) >= size:
            yield chunk_lines, chunk
            chunk_lines, chunk = [], []
    if chunk:
        yield chunk_lines, chunk


def run(
    lines: Iterable[Line],
    sink: Sink,
    tally: Tally,
    *,
    batch_size: int,
    concurrency: int,
    strict: bool,
    on_progress: Callable[[Tally], None],
    **opts: Any,
) -> None:
    """Publish everything with up to ``concurrency`` batches in flight."""
    pending: dict[Future[None], list[Line]] = {}

    def settle(done: Iterable[Future[None]]) -> None:
        for future in done:
            sent = pending.pop(future)
            try:
                future.result()
                tally.published += len(sent)
            except InvalidRequest as exc:
                if strict:
                    raise RejectedLine(Rejection(sent[0].number, exc.detail)) from exc
                tally.rejected.extend(Rejection(line.number, exc.detail) for line in sent)
        on_progress(tally)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        try:
            for sent, items in batches(lines, tally, size=batch_size, strict=strict, **opts):
                while len(pending) >= concurrency:
                    settle(wait(pending, return_when=FIRST_COMPLETED).done)
                pending[pool.submit(sink.send, items)] = sent
            settle(wait(pending).done)
        except BaseException:
            # Stop cleanly: drop batches not yet sent, account for those on the wire.
            for future in list(pending):
                if future.cancel():
                    del pending[future]
            wait(pending)
            with contextlib.suppress(RejectedLine):
                settle(list(pending))
            raise
