"""Create (or verify) the Pub/Sub resources latam needs; safe to run again.

Topic, pull subscription with a dead-letter policy and a retry policy, dead-letter topic
and dead-letter subscription. Pub/Sub accepts 5-100 for ``max_delivery_attempts`` and
10-600 s for ack deadlines, so smaller settings are raised to those floors here (latam
itself still dead-letters after the configured attempts, see ``PubsubBroker.nack``).
"""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as google_errors
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from latam.broker.base import DeliveryPolicy
from latam.broker.pubsub.config import PubsubConfig
from latam.errors import BrokerUnavailable

ACK_DEADLINE_RANGE = (10, 600)  # seconds Pub/Sub accepts
DELIVERY_ATTEMPTS_RANGE = (5, 100)
BACKOFF_RANGE = (0.0, 600.0)
DEAD_LETTER_ACK_DEADLINE = 60  # seconds a dead-letter snapshot may hold its leases


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def subscription_spec(config: PubsubConfig, policy: DeliveryPolicy) -> dict[str, Any]:
    """The main subscription as a ``CreateSubscription`` request."""
    low = _clamp(policy.backoff_min_seconds, BACKOFF_RANGE)
    high = max(_clamp(policy.backoff_max_seconds, BACKOFF_RANGE), low)
    return {
        "name": config.subscription_path,
        "topic": config.topic_path,
        "ack_deadline_seconds": int(_clamp(policy.ack_deadline_seconds, ACK_DEADLINE_RANGE)),
        "dead_letter_policy": {
            "dead_letter_topic": config.dead_letter_topic_path,
            "max_delivery_attempts": int(
                _clamp(policy.max_delivery_attempts, DELIVERY_ATTEMPTS_RANGE)
            ),
        },
        "retry_policy": {
            "minimum_backoff": {"seconds": int(low), "nanos": int(low % 1 * 1e9)},
            "maximum_backoff": {"seconds": int(high), "nanos": int(high % 1 * 1e9)},
        },
    }


def ensure_resources(config: PubsubConfig, policy: DeliveryPolicy) -> list[str]:
    """Create what is missing; one line per resource saying created or verified."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        return [
            _ensure(publisher.create_topic, {"name": config.topic_path}),
            _ensure(publisher.create_topic, {"name": config.dead_letter_topic_path}),
            _ensure(subscriber.create_subscription, subscription_spec(config, policy)),
            _ensure(
                subscriber.create_subscription,
                {
                    "name": config.dead_letter_subscription_path,
                    "topic": config.dead_letter_topic_path,
                    "ack_deadline_seconds": DEAD_LETTER_ACK_DEADLINE,
                },
            ),
        ]
    finally:
        subscriber.close()
        publisher.stop()


def teardown(config: PubsubConfig) -> None:
    """Delete the four resources (tests and throw-away environments only)."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        for path in (config.subscription_path, config.dead_letter_subscription_path):
            _ignore_missing(subscriber.delete_subscription, subscription=path)
        for path in (config.topic_path, config.dead_letter_topic_path):
            _ignore_missing(publisher.delete_topic, topic=path)
    finally:
        subscriber.close()
        publisher.stop()


def _ensure(create: Any, request: dict[str, Any]) -> str:
    try:
        create(request=request, timeout=30)
    except google_errors.AlreadyExists:
        return f"verified {request['name']}"
    except google_errors.GoogleAPIError as exc:
        raise BrokerUnavailable(
            f"could not create {request['name']}: {type(exc).__name__}: {exc}"
        ) from exc
    return f"created {request['name']}"


def _ignore_missing(delete: Any, **kwargs: str) -> None:
    try:
        delete(timeout=30, **kwargs)
    except google_errors.NotFound:
        pass
    except google_errors.GoogleAPIError as exc:
        raise BrokerUnavailable(f"could not delete: {type(exc).__name__}") from exc
