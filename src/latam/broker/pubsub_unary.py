"""Synchronous (unary) pull for the Pub/Sub adapter: ``LATAM_PUBSUB_PULL_MODE=unary``.

Each ``pull()`` is one ``Pull`` RPC for at most the worker's batch, so Pub/Sub leases
only what the worker holds; acks and nacks are ``Acknowledge`` and
``ModifyAckDeadline(0)`` RPCs for a whole batch. Nothing extends leases: a message left
unsettled past the subscription's ack deadline is redelivered by Pub/Sub.

Streaming pull is the default and the faster one. Unary pull trades throughput for
leases that end with the process: a worker killed with SIGKILL leaves nothing leased
beyond one ack deadline, on the service and on Google's emulator alike (the emulator
keeps serving a killed client's streaming pull, see docs/brokers.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as google_errors

from latam.broker.pubsub_publish import RPC_TIMEOUT_SECONDS
from latam.errors import BrokerUnavailable

MAX_IDS_PER_CALL = 1000  # keeps an Acknowledge/ModifyAckDeadline request well under 512 KB


@dataclass(frozen=True, slots=True)
class PulledMessage:
    """A message from a Pull RPC, with the fields the adapter reads from streaming ones."""

    message_id: str
    ack_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime
    delivery_attempt: int


class UnaryPuller:
    """Pull, acknowledge and nack by RPC on one subscription."""

    def __init__(self, subscriber: Any, subscription_path: str) -> None:
        self.subscriber = subscriber
        self.subscription = subscription_path

    def pull(self, max_messages: int, timeout: float) -> list[PulledMessage]:
        """Up to ``max_messages``; an empty list when none arrived within ``timeout``."""
        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": max_messages},
                timeout=max(timeout, 0.1),
                retry=None,
            )
        except (google_errors.DeadlineExceeded, google_errors.RetryError):
            return []
        except google_errors.GoogleAPIError as exc:
            raise BrokerUnavailable(f"Pub/Sub pull failed: {type(exc).__name__}") from exc
        return [
            PulledMessage(
                message_id=received.message.message_id,
                ack_id=received.ack_id,
                data=bytes(received.message.data),
                attributes=dict(received.message.attributes),
                publish_time=received.message.publish_time,
                delivery_attempt=int(received.delivery_attempt or 0),
            )
            for received in response.received_messages
        ]

    def ack(self, messages: Sequence[PulledMessage]) -> None:
        for chunk in _chunks([m.ack_id for m in messages]):
            self._call("acknowledge", {"subscription": self.subscription, "ack_ids": chunk})

    def nack(self, messages: Sequence[PulledMessage]) -> None:
        """Hand back at once; the subscription's retry policy spaces the redelivery."""
        for chunk in _chunks([m.ack_id for m in messages]):
            request = {"subscription": self.subscription, "ack_ids": chunk}
            self._call("modify_ack_deadline", request | {"ack_deadline_seconds": 0})

    def release(self, messages: Sequence[PulledMessage]) -> None:
        """Best-effort nack on shutdown: if it fails, the ack deadline redelivers them."""
        with contextlib.suppress(BrokerUnavailable):
            self.nack(messages)

    def _call(self, method: str, request: dict[str, Any]) -> None:
        try:
            getattr(self.subscriber, method)(request=request, timeout=RPC_TIMEOUT_SECONDS)
        except google_errors.GoogleAPIError as exc:
            raise BrokerUnavailable(f"Pub/Sub {method} failed: {type(exc).__name__}") from exc


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + MAX_IDS_PER_CALL] for i in range(0, len(ids), MAX_IDS_PER_CALL)]
