"""Broker harnesses for the contract suite: each knows how to build its adapter on a
private namespace and how a producer that never heard of latam publishes to it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson

from latam.broker.base import Broker, DeliveryPolicy
from latam.broker.pubsub.config import PubsubConfig, parse_pubsub_url
from latam.broker.sqlite import SqliteBroker
from tests.fakes import MemoryBroker, MemoryQueue
from tests.support import unique


class Harness(Protocol):
    name: str
    # Smallest ack deadline the broker honours (seconds); tests wait past it.
    min_ack_deadline: float

    def make(self, policy: DeliveryPolicy) -> Broker: ...
    def publish_raw(self, body: bytes, attributes: Mapping[str, str]) -> None: ...


@dataclass
class SqliteHarness:
    path: Path
    name: str = "sqlite"
    min_ack_deadline: float = 0.5

    def make(self, policy: DeliveryPolicy) -> Broker:
        return SqliteBroker(self.path, policy)

    def publish_raw(self, body: bytes, attributes: Mapping[str, str]) -> None:
        """What a non-latam producer does: one INSERT into the queue table."""
        self.make(DeliveryPolicy()).ping()  # the file and its schema exist
        with sqlite3.connect(self.path) as conn:
            now = time.time()
            conn.execute(
                "INSERT INTO queue (body, attributes, published_at, available_at)"
                " VALUES (?, ?, ?, ?)",
                (body, orjson.dumps(dict(attributes)).decode(), now, now),
            )


@contextmanager
def sqlite_harness(tmp_path: Path) -> Iterator[Harness]:
    yield SqliteHarness(tmp_path / "broker.db")


@dataclass
class PubsubHarness:
    """A private topic/subscription quartet on the emulator, deleted afterwards."""

    config: PubsubConfig
    name: str = "pubsub"
    # Pub/Sub's floor for ack deadlines; the adapter lets leases lapse after it.
    min_ack_deadline: float = 10.0
    pull_mode: str = "streaming"

    def make(self, policy: DeliveryPolicy) -> Broker:
        from latam.broker.pubsub import PubsubBroker
        from latam.broker.pubsub.admin import ensure_resources

        ensure_resources(self.config, policy)
        return PubsubBroker(self.config, policy, pull_mode=self.pull_mode)

    def publish_raw(self, body: bytes, attributes: Mapping[str, str]) -> None:
        """What a plain google-cloud-pubsub producer does (attributes as a map)."""
        from google.cloud import pubsub_v1

        from latam.broker.pubsub.admin import ensure_resources
        from latam.broker.pubsub.publish import publish_rpc

        ensure_resources(self.config, DeliveryPolicy())
        publisher = pubsub_v1.PublisherClient()
        message = {"data": body, "attributes": dict(attributes)}
        publish_rpc(publisher, self.config.topic_path, [message], (1000, 9_000_000))
        publisher.stop()


@contextmanager
def pubsub_harness(_tmp_path: Path, pull_mode: str = "streaming") -> Iterator[Harness]:
    from latam.broker.pubsub.admin import teardown
    from tests.pubsub_emulator import EMULATOR, PROJECT

    EMULATOR.ensure()
    topic = unique("latam-")
    config = parse_pubsub_url(f"pubsub://{PROJECT}/{topic}?subscription={topic}-sub")
    try:
        yield PubsubHarness(config, pull_mode=pull_mode)
    finally:
        teardown(config)


def pubsub_unary_harness(tmp_path: Path) -> AbstractContextManager[Harness]:
    return pubsub_harness(tmp_path, pull_mode="unary")


@dataclass
class NatsHarness:
    """A private stream (and its dead-letter stream) on the shared NATS server."""

    url: str
    name: str = "nats"
    min_ack_deadline: float = 1.0

    def make(self, policy: DeliveryPolicy) -> Broker:
        from latam.broker.nats import NatsBroker, parse_nats_url

        return NatsBroker(parse_nats_url(self.url), policy)

    def publish_raw(self, body: bytes, attributes: Mapping[str, str]) -> None:
        """What a plain ``nats pub`` does: a JetStream publish with headers."""
        from latam.broker.nats.admin import publish_plain

        publish_plain(self.url, body, dict(attributes))


@contextmanager
def nats_harness(_tmp_path: Path) -> Iterator[Harness]:
    from latam.broker.nats.admin import delete_streams
    from tests.support import NATS_URL, require

    require(NATS_URL, 4222, "NATS")
    url = f"{NATS_URL.rstrip('/')}/{unique('LATAM_').upper()}"
    try:
        yield NatsHarness(url)
    finally:
        delete_streams(url)


@dataclass
class MemoryHarness:
    """The in-memory fake of tests/fakes.py, held to the same contract so it cannot drift."""

    queue: MemoryQueue = field(default_factory=MemoryQueue)
    name: str = "memory"
    min_ack_deadline: float = 0.5

    def make(self, policy: DeliveryPolicy) -> Broker:
        return MemoryBroker(policy, self.queue)

    def publish_raw(self, body: bytes, attributes: Mapping[str, str]) -> None:
        """What a foreign producer does: a body and attributes straight onto the queue."""
        self.queue.put(body, attributes)


@contextmanager
def memory_harness(_tmp_path: Path) -> Iterator[Harness]:
    yield MemoryHarness()


HARNESSES = {
    "memory": memory_harness,
    "sqlite": sqlite_harness,
    "pubsub": pubsub_harness,
    "pubsub-unary": pubsub_unary_harness,
    "nats": nats_harness,
}
