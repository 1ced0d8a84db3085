"""A Pub/Sub user's own one-liner feeds latam: ``publisher.publish(path, data, **attrs)``
cannot carry an attribute named ``topic``, so the topic travels as ``latam_topic``."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.backends import pubsub_backend
from tests.support import create_topic, running_serve, unique, wait_for_count


def test_the_idiomatic_pubsub_client_publishes_to_latam(tmp_path: Path) -> None:
    from google.cloud import pubsub_v1

    with (
        pubsub_backend(tmp_path) as backend,
        running_serve(tmp_path, **backend.settings) as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        name = unique("client-")
        topic_id = create_topic(client, name)
        publisher = pubsub_v1.PublisherClient()
        path = backend.settings["broker_url"].removeprefix("pubsub://").split("?")[0]
        project, topic = path.split("/")
        try:
            futures = [
                publisher.publish(
                    publisher.topic_path(project, topic),
                    b'{"flight": "LA800", "n": %d}' % n,
                    latam_topic=name,
                    message_id=f"la800-{n}",
                    gate="B12",
                )
                for n in range(3)
            ]
            for future in futures:
                future.result(timeout=30)
        finally:
            publisher.stop()
        stored = wait_for_count(client, topic_id, 3, timeout=60)
    assert sorted(m["id"] for m in stored) == ["la800-0", "la800-1", "la800-2"]
    assert all(m["data"]["flight"] == "LA800" for m in stored)
    # The alias names the topic; it is not kept as a user attribute.
    assert all(m["attributes"] == {"gate": "B12"} for m in stored)
