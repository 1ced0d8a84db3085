"""The Google Cloud Pub/Sub adapter: ``pubsub://PROJECT/TOPIC?subscription=SUB``."""

from latam.broker.pubsub.adapter import PubsubBroker
from latam.broker.pubsub.config import PubsubConfig, parse_pubsub_url

__all__ = ["PubsubBroker", "PubsubConfig", "parse_pubsub_url"]
