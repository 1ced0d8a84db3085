"""Broker harnesses for the contract suite: each knows how to build its adapter on a
private namespace and how a producer that never heard of latam publishes to it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

from latam.broker.base import Broker, DeliveryPolicy
from latam.broker.sqlite import SqliteBroker


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


HARNESSES = {"sqlite": sqlite_harness}
