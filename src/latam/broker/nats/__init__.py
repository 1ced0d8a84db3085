"""The NATS JetStream adapter: ``nats://HOST:PORT/STREAM``."""

from latam.broker.nats.adapter import NatsBroker
from latam.broker.nats.config import NatsConfig, parse_nats_url

__all__ = ["NatsBroker", "NatsConfig", "parse_nats_url"]
