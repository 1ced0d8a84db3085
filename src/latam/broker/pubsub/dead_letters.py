"""The Pub/Sub dead-letter store: the dead-letter subscription itself, no side index.

Every operation takes a snapshot: it pulls the subscription (synchronous pull, leases
held) until a pull comes back empty or ``SCAN_LIMIT`` messages are held, acts on the
chosen ones (ack to purge, publish-then-ack to replay) and hands every other lease back
at once with a zero ack deadline. While a snapshot is held its messages are invisible
to a concurrent snapshot, so two simultaneous listings may each see part of the store.
Dead-letter ids are the Pub/Sub message ids of the dead-letter messages; listings are
ordered by that id (numeric where it is numeric) so ``after`` pages through them.

Messages latam dead-letters carry the attributes of ``broker.letters``; messages Pub/Sub
forwarded under the subscription's dead-letter policy carry ``CloudPubSubDeadLetterSource*``
attributes instead, read here as the same facts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

from google.api_core import exceptions as google_errors

from latam.broker import letters
from latam.broker.base import REASON_MAX_ATTEMPTS, DeadLetter, within_bytes
from latam.broker.pubsub.config import PubsubConfig
from latam.broker.pubsub.publish import publish_rpc
from latam.errors import BrokerUnavailable, NotFound

POLICY_PREFIX = "CloudPubSubDeadLetterSource"
SCAN_LIMIT = 10_000  # most dead letters one operation looks at
PULL_TIMEOUT_SECONDS = 1.0  # an empty pull waits this long before the scan ends


class DeadLetterStore:
    """List, inspect, replay and purge the messages on the dead-letter subscription."""

    def __init__(self, config: PubsubConfig, publisher: Any, subscriber: Any) -> None:
        self.config = config
        self._publisher = publisher
        self._subscriber = subscriber

    def list_letters(self, *, limit: int, after: str | None, max_bytes: int) -> list[DeadLetter]:
        letters = self._with_snapshot(lambda held: [])
        start = _sort_key(after) if after else None
        chosen = [d for d in letters if start is None or _sort_key(d.id) > start]
        return within_bytes(chosen[:limit], max_bytes)

    def get(self, dead_letter_id: str) -> DeadLetter:
        for letter in self._with_snapshot(lambda held: []):
            if letter.id == dead_letter_id:
                return letter
        raise NotFound(f"dead letter {dead_letter_id!r} does not exist")

    def purge(self, ids: Sequence[str] | None) -> int:
        return len(self._with_snapshot(_selector(ids), action=None, only_chosen=True))

    def count(self) -> int | None:
        """Counting would mean pulling the whole dead-letter subscription; not cheap
        (Cloud Monitoring's num_undelivered_messages has it)."""
        return None

    def replay(self, ids: Sequence[str] | None) -> int:
        topic_path = self.config.topic_path

        def republish(chosen: list[tuple[str, Any]]) -> None:
            wire = [
                {"data": m.message.data, "attributes": _original(m.message.attributes)}
                for _, m in chosen
            ]
            publish_rpc(self._publisher, topic_path, wire, (1000, 9 * 1024 * 1024))

        return len(self._with_snapshot(_selector(ids), action=republish, only_chosen=True))

    def _with_snapshot(
        self,
        choose: Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]],
        *,
        action: Callable[[list[tuple[str, Any]]], None] | None = None,
        only_chosen: bool = False,
    ) -> list[DeadLetter]:
        """Hold every lease, ack the chosen ones (after ``action``), release the rest."""
        held = self._scan()
        chosen = choose(held)
        try:
            if chosen:
                if action is not None:
                    action(chosen)
                self._call("acknowledge", ack_ids=[ack_id for ack_id, _ in chosen])
        finally:
            done = {ack_id for ack_id, _ in chosen}
            self._release([ack_id for ack_id, _ in held if ack_id not in done])
        letters = [_dead_letter(m.message) for _, m in (chosen if only_chosen else held)]
        return sorted(letters, key=lambda d: _sort_key(d.id))

    def _scan(self) -> list[tuple[str, Any]]:
        held: dict[str, tuple[str, Any]] = {}
        while len(held) < SCAN_LIMIT:
            try:
                response = self._subscriber.pull(
                    subscription=self.config.dead_letter_subscription_path,
                    max_messages=min(1000, SCAN_LIMIT - len(held)),
                    timeout=PULL_TIMEOUT_SECONDS,
                )
            except google_errors.DeadlineExceeded:
                break
            except google_errors.GoogleAPIError as exc:
                self._release([ack_id for ack_id, _ in held.values()])
                raise BrokerUnavailable(
                    f"Pub/Sub dead letters unavailable: {type(exc).__name__}"
                ) from exc
            if not response.received_messages:
                break
            for received in response.received_messages:
                held[received.message.message_id] = (received.ack_id, received)
        return self._without_copies(list(held.values()))

    def _without_copies(self, held: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Acknowledge (drop) second copies of one dead letter: a worker that died after
        publishing the copy and before settling the original sets it aside again."""
        kept: dict[str, tuple[str, Any]] = {}
        copies: list[str] = []
        for ack_id, received in sorted(held, key=lambda h: _sort_key(h[1].message.message_id)):
            source = received.message.attributes.get(letters.SOURCE_ID)
            if source and source in kept:
                copies.append(ack_id)
                continue
            kept[source or received.message.message_id] = (ack_id, received)
        if copies:
            self._call("acknowledge", ack_ids=copies)
        return list(kept.values())

    def _release(self, ack_ids: list[str]) -> None:
        for start in range(0, len(ack_ids), 1000):
            batch = ack_ids[start : start + 1000]
            self._call("modify_ack_deadline", ack_ids=batch, ack_deadline_seconds=0)

    def _call(self, method: str, **kwargs: Any) -> None:
        try:
            getattr(self._subscriber, method)(
                subscription=self.config.dead_letter_subscription_path, timeout=30, **kwargs
            )
        except google_errors.GoogleAPIError as exc:
            raise BrokerUnavailable(
                f"Pub/Sub dead letters unavailable: {type(exc).__name__}"
            ) from exc


def _selector(
    ids: Sequence[str] | None,
) -> Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]]:
    wanted = None if ids is None else set(ids)
    return lambda held: [h for h in held if wanted is None or h[1].message.message_id in wanted]


def _sort_key(dead_letter_id: str) -> tuple[int, str]:
    return (int(dead_letter_id), "") if dead_letter_id.isdigit() else (2**63, dead_letter_id)


def _original(attributes: Any) -> dict[str, str]:
    return letters.original(dict(attributes), foreign=[POLICY_PREFIX])


def _dead_letter(message: Any) -> DeadLetter:
    attributes = dict(message.attributes)
    return letters.parse(
        str(message.message_id),
        bytes(message.data),
        attributes,
        dead_lettered_at=message.publish_time.astimezone(UTC),
        foreign=[POLICY_PREFIX],
        defaults={
            letters.REASON: f"{REASON_MAX_ATTEMPTS}: forwarded by Pub/Sub",
            letters.ATTEMPTS: attributes.get(f"{POLICY_PREFIX}DeliveryCount", "0"),
            letters.SOURCE_TIME: attributes.get(f"{POLICY_PREFIX}TopicPublishTime", ""),
        },
    )
