"""Broker back-ends for the end-to-end suites: the settings that select each one and a
producer that publishes straight onto it (as a non-latam client would)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.contract.brokers import SqliteHarness


@dataclass
class BrokerBackend:
    publish_raw: Callable[[bytes, Mapping[str, str]], None]
    settings: dict[str, str] = field(default_factory=dict)


@contextmanager
def sqlite_backend(data_dir: Path) -> Iterator[BrokerBackend]:
    # The default broker URL puts the queue at DATA_DIR/broker.db.
    yield BrokerBackend(publish_raw=SqliteHarness(data_dir / "broker.db").publish_raw)


BROKERS: dict[str, Callable[[Path], AbstractContextManager[BrokerBackend]]] = {
    "sqlite": sqlite_backend,
}
