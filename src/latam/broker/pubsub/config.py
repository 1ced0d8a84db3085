"""Where a Pub/Sub broker lives: parsed from ``pubsub://PROJECT/TOPIC?subscription=SUB``.

Optional query parameters ``dead_letter_topic=`` and ``dead_letter_subscription=``
name the dead-letter pair; settings ``pubsub_dead_letter_topic`` and
``pubsub_dead_letter_subscription`` win over them; the defaults are
``<TOPIC>-dead-letter`` and ``<SUB>-dead-letter``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

# Pub/Sub resource ids: 3-255 characters, starting with a letter.
_RESOURCE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$|^[a-z0-9.:\-]+$")


@dataclass(frozen=True, slots=True)
class PubsubConfig:
    """Project and resource ids of one latam deployment on Pub/Sub."""

    project: str
    topic: str
    subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str

    @property
    def topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"

    @property
    def subscription_path(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.subscription}"

    @property
    def dead_letter_topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.dead_letter_topic}"

    @property
    def dead_letter_subscription_path(self) -> str:
        return f"projects/{self.project}/subscriptions/{self.dead_letter_subscription}"


def parse_pubsub_url(
    url: str, *, dead_letter_topic: str = "", dead_letter_subscription: str = ""
) -> PubsubConfig:
    """Parse the broker URL; raises ``ValueError`` saying what is wrong."""
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    project = parts.netloc
    topic = parts.path.strip("/")
    subscription = query.get("subscription", "")
    if parts.scheme != "pubsub" or not project or not _PROJECT_ID.match(project):
        raise ValueError("expected pubsub://PROJECT/TOPIC?subscription=SUB")
    config = PubsubConfig(
        project=project,
        topic=topic,
        subscription=subscription,
        dead_letter_topic=dead_letter_topic
        or query.get("dead_letter_topic", "")
        or f"{topic}-dead-letter",
        dead_letter_subscription=dead_letter_subscription
        or query.get("dead_letter_subscription", "")
        or f"{subscription}-dead-letter",
    )
    for name in ("topic", "subscription", "dead_letter_topic", "dead_letter_subscription"):
        if not _RESOURCE_ID.match(getattr(config, name)):
            raise ValueError(f"{name} must be 3-255 characters starting with a letter")
    return config
