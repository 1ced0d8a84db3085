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


@contextmanager
def pubsub_backend(_data_dir: Path, pull_mode: str = "streaming") -> Iterator[BrokerBackend]:
    """Private resources on the session's emulator, created as ``latam pubsub setup`` does."""
    from latam.broker.base import DeliveryPolicy
    from latam.broker.pubsub.admin import ensure_resources, teardown
    from tests.contract.brokers import pubsub_harness

    with pubsub_harness(_data_dir) as harness:
        config = harness.config  # type: ignore[attr-defined]
        ensure_resources(config, DeliveryPolicy(backoff_min_seconds=0.2, backoff_max_seconds=2))
        url = f"pubsub://{config.project}/{config.topic}?subscription={config.subscription}"
        try:
            settings = {"broker_url": url, "pubsub_pull_mode": pull_mode}
            yield BrokerBackend(publish_raw=harness.publish_raw, settings=settings)
        finally:
            teardown(config)


@contextmanager
def nats_backend(_data_dir: Path) -> Iterator[BrokerBackend]:
    """A private stream on the shared NATS server; latam creates it on first use."""
    from latam.broker.nats.admin import delete_streams, publish_plain
    from tests.support import NATS_URL, require, unique

    require(NATS_URL, 4222, "NATS")
    url = f"{NATS_URL.rstrip('/')}/{unique('LATAM_E2E_').upper()}"

    def publish_raw(body: bytes, attributes: Mapping[str, str]) -> None:
        publish_plain(url, body, dict(attributes))

    try:
        yield BrokerBackend(publish_raw=publish_raw, settings={"broker_url": url})
    finally:
        delete_streams(url)


def pubsub_unary_backend(data_dir: Path) -> AbstractContextManager[BrokerBackend]:
    return pubsub_backend(data_dir, pull_mode="unary")


BROKERS: dict[str, Callable[[Path], AbstractContextManager[BrokerBackend]]] = {
    "sqlite": sqlite_backend,
    "pubsub": pubsub_backend,
    "pubsub-unary": pubsub_unary_backend,
    "nats": nats_backend,
}
