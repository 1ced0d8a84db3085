#!/usr/bin/env python3
"""Post-deploy integration test of a running latam API.

Creates a uniquely named topic, publishes N messages in batches, polls until every message
is readable through the API (which proves broker -> worker -> store -> API end to end),
checks the exact content and order, exercises the original compatibility contract
(``/api/data``), and always deletes what it created.

Usage:
    python scripts/smoke.py --base-url https://latam-api-xyz.a.run.app [--api-key KEY]
        [--messages 50] [--timeout 60]

Environment: ``LATAM_SMOKE_API_KEY`` (API key, ``Authorization: Bearer``) and, for an
IAM-only Cloud Run service, ``LATAM_SMOKE_ID_TOKEN`` (sent as ``X-Serverless-Authorization``).
Exit status: 0 only when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

BATCH_SIZE = 20
PAGE_LIMIT = 500
POLL_INTERVAL_SECONDS = 1.0


class SmokeError(Exception):
    """A step found something other than what the contract promises."""


@dataclass
class Result:
    """What the run observed, for the closing summary line."""

    published: int = 0
    read: int = 0
    missing: int = 0
    duplicated: int = 0
    failures: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Smoke test a deployed latam API.")
    parser.add_argument("--base-url", required=True, help="API root, e.g. https://host")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LATAM_SMOKE_API_KEY", ""),
        help="API key (default: $LATAM_SMOKE_API_KEY)",
    )
    parser.add_argument("--messages", type=int, default=50, help="messages to publish")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for reads")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def make_client(base_url: str, api_key: str) -> httpx.Client:
    headers = {"Accept": "application/json", "User-Agent": "latam-smoke/1"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    id_token = os.environ.get("LATAM_SMOKE_ID_TOKEN", "")
    if id_token:
        headers["X-Serverless-Authorization"] = f"Bearer {id_token}"
    return httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=30.0)


def expect(response: httpx.Response, status: int | tuple[int, ...], what: str) -> Any:
    """Return the JSON body when the status is as expected, else raise ``SmokeError``."""
    allowed = status if isinstance(status, tuple) else (status,)
    if response.status_code not in allowed:
        raise SmokeError(
            f"{what}: expected HTTP {status}, got {response.status_code}: {response.text[:300]}"
        )
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def step(name: str, action: Callable[[], str], result: Result) -> bool:
    """Run one step, print its one-line outcome, record a failure."""
    started = time.monotonic()
    try:
        detail = action()
    except (SmokeError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        print(f"FAIL {name}: {exc}", flush=True)
        result.failures.append(name)
        return False
    print(f"ok   {name} ({time.monotonic() - started:.1f}s): {detail}", flush=True)
    return True


def build_messages(run_id: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"smoke-{run_id}-{index:05d}",
            "data": {"marker": f"{run_id}:{index}", "index": index, "run": run_id},
            "attributes": {"smoke_run": run_id, "index": str(index)},
        }
        for index in range(count)
    ]


def batches(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def publish(client: httpx.Client, topic_id: int, messages: list[dict[str, Any]]) -> int:
    """Publish in batches (the first message alone, the rest as ``messages`` lists)."""
    sent = 0
    first, rest = messages[:1], messages[1:]
    body = expect(client.post(f"/v1/topics/{topic_id}/messages", json=first[0]), 202, "publish one")
    check_ids(body, first)
    sent += 1
    for chunk in batches(rest, BATCH_SIZE):
        body = expect(
            client.post(f"/v1/topics/{topic_id}/messages", json={"messages": chunk}),
            202,
            "publish batch",
        )
        check_ids(body, chunk)
        sent += len(chunk)
    return sent


def check_ids(body: Any, sent: list[dict[str, Any]]) -> None:
    ids = body.get("message_ids") if isinstance(body, dict) else None
    want = [message["id"] for message in sent]
    if ids != want:
        raise SmokeError(f"publish returned message_ids {ids!r}, expected {want!r}")


def read_all(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    """Every message of a topic, following ``next_cursor`` to the end."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        params: dict[str, Any] = {"limit": PAGE_LIMIT}
        if cursor:
            params["cursor"] = cursor
        page = expect(client.get(path, params=params), 200, f"GET {path}")
        items.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items
    raise SmokeError(f"GET {path}: pagination did not end")


def wait_for_messages(
    client: httpx.Client, topic_id: int, expected: list[dict[str, Any]], timeout: float
) -> list[dict[str, Any]]:
    """Poll until every published id is readable or the timeout passes."""
    want = {message["id"] for message in expected}
    deadline = time.monotonic() + timeout
    while True:
        got = read_all(client, f"/v1/topics/{topic_id}/messages")
        if want <= {item["id"] for item in got} or time.monotonic() >= deadline:
            return got
        time.sleep(POLL_INTERVAL_SECONDS)


def verify_content(
    expected: list[dict[str, Any]], got: list[dict[str, Any]], result: Result
) -> str:
    """Exact data, attributes and ids; no duplicates; ingest order equals publish order."""
    ids = [item["id"] for item in got]
    result.read = len(set(ids) & {message["id"] for message in expected})
    result.duplicated = len(ids) - len(set(ids))
    result.missing = len(expected) - result.read
    problems: list[str] = []
    if result.missing:
        problems.append(f"{result.missing} missing")
    if result.duplicated:
        problems.append(f"{result.duplicated} duplicated")
    unexpected = set(ids) - {message["id"] for message in expected}
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ids")
    by_id = {item["id"]: item for item in got}
    for message in expected:
        item = by_id.get(message["id"])
        if item is None:
            continue
        if item.get("data") != message["data"]:
            problems.append(f"{message['id']}: data {item.get('data')!r} != {message['data']!r}")
        if item.get("attributes") != message["attributes"]:
            problems.append(f"{message['id']}: attributes {item.get('attributes')!r}")
        if not item.get("published_at") or not item.get("ingested_at"):
            problems.append(f"{message['id']}: published_at/ingested_at missing")
    order = [message["id"] for message in expected if message["id"] in by_id]
    seen_order = [item_id for item_id in dict.fromkeys(ids) if item_id in by_id]
    if order != seen_order:
        problems.append("messages are not in publish order")
    if problems:
        raise SmokeError("; ".join(problems[:10]))
    return f"{result.read} messages exact, in order, no duplicates"


def check_compat(client: httpx.Client, run_id: str, created: list[int]) -> str:
    """The original /api/data contract: create, list, rename, read messages, delete."""
    name = f"smoke-compat-{run_id}"
    body = expect(client.post("/api/data", json={"nombre": name}), 201, "POST /api/data")
    if set(body) != {"id", "nombre"} or body["nombre"] != name:
        raise SmokeError(f"POST /api/data returned {body!r}")
    topic_id = body["id"]
    created.append(topic_id)
    listing = expect(client.get("/api/data"), 200, "GET /api/data")
    if [topic_id, name] not in listing["data"]:
        raise SmokeError(f"GET /api/data does not list [{topic_id}, {name!r}]")
    renamed = f"{name}-renamed"
    expect(
        client.put(f"/api/data/{topic_id}", json={"nombre": renamed}), (200, 204), "PUT /api/data"
    )
    listing = expect(client.get("/api/data"), 200, "GET /api/data")
    if [topic_id, renamed] not in listing["data"]:
        raise SmokeError("PUT /api/data/{id} did not rename the topic")
    messages = expect(client.get(f"/api/data/{topic_id}"), 200, "GET /api/data/{id}")
    if messages.get("data") != [] or "next_cursor" not in messages:
        raise SmokeError(f"GET /api/data/{topic_id} returned {messages!r}")
    expect(client.delete(f"/api/data/{topic_id}"), 204, "DELETE /api/data/{id}")
    created.remove(topic_id)
    expect(client.get(f"/api/data/{topic_id}"), 404, "GET deleted /api/data/{id}")
    return f"topic {topic_id} created, listed, renamed, read, deleted"


def cleanup(client: httpx.Client, topic_ids: list[int]) -> str:
    failed = []
    for topic_id in list(topic_ids):
        response = client.delete(f"/v1/topics/{topic_id}")
        if response.status_code in (204, 404):
            topic_ids.remove(topic_id)
        else:
            failed.append(f"{topic_id}: HTTP {response.status_code}")
    if failed:
        raise SmokeError("could not delete " + ", ".join(failed))
    return "test topics deleted"


def run(args: argparse.Namespace) -> Result:
    result = Result()
    run_id = uuid.uuid4().hex
    expected = build_messages(run_id, args.messages)
    created: list[int] = []
    state: dict[str, Any] = {}

    with make_client(args.base_url, args.api_key) as client:

        def health() -> str:
            expect(client.get("/healthz"), 200, "GET /healthz")
            expect(client.get("/readyz"), 200, "GET /readyz")
            return "healthz and readyz answer 200"

        def create_topic() -> str:
            name = f"smoke-{run_id}"
            body = expect(client.post("/v1/topics", json={"name": name}), 201, "POST /v1/topics")
            if body.get("name") != name or not isinstance(body.get("id"), int):
                raise SmokeError(f"POST /v1/topics returned {body!r}")
            created.append(body["id"])
            state["topic_id"] = body["id"]
            expect(client.post("/v1/topics", json={"name": name}), 409, "duplicate topic")
            return f"topic {body['id']} ({name}); duplicate name -> 409"

        def publish_step() -> str:
            result.published = publish(client, state["topic_id"], expected)
            return f"{result.published} messages accepted (202) with their ids"

        def read_step() -> str:
            got = wait_for_messages(client, state["topic_id"], expected, args.timeout)
            return verify_content(expected, got, result)

        try:
            ok = step("health", health, result)
            ok = ok and step("create topic", create_topic, result)
            ok = ok and step("publish", publish_step, result)
            ok = ok and step("read back", read_step, result)
            if ok:
                step(
                    "compatibility /api/data", lambda: check_compat(client, run_id, created), result
                )
        finally:
            step("cleanup", lambda: cleanup(client, created), result)
    result.missing = max(args.messages - result.read, 0)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(
        f"smoke: {result.published} published, {result.read} read, "
        f"{result.missing} missing, {result.duplicated} duplicated"
        + (f"; failed: {', '.join(result.failures)}" if result.failures else ""),
        flush=True,
    )
    return 0 if not result.failures else 1


if __name__ == "__main__":
    sys.exit(main())
