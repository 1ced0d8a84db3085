"""How the Pub/Sub adapter receives messages: one ``Puller`` per ``LATAM_PUBSUB_PULL_MODE``.

``StreamingPuller`` (``streaming``, the default) uses the client library's streaming
pull. Its callback only appends the message to an internal queue that ``pull()`` drains,
so the worker keeps its batch shape; ``FlowControl(max_messages, max_bytes)`` bounds
what is leased and not yet settled, and the library extends those leases.

``UnaryPuller`` (``unary``): each ``pull()`` is one ``Pull`` RPC for at most the
worker's batch, so Pub/Sub leases only what the worker holds; acks and nacks are
``Acknowledge`` and ``ModifyAckDeadline(0)`` RPCs for a whole batch. Nothing extends
leases: a message left unsettled past the subscription's ack deadline is redelivered.

Streaming pull is the default and the faster one. Unary pull trades throughput for
leases that end with the process: a worker killed with SIGKILL leaves nothing leased
beyond one ack deadline, on the service and on Google's emulator alike (the emulator
keeps serving a killed client's streaming pull, see docs/brokers.md).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from google.api_core import exceptions as google_errors
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

from latam.broker.base import DeliveryPolicy
from latam.broker.pubsub.publish import RPC_TIMEOUT_SECONDS
from latam.errors import BrokerUnavailable

MAX_IDS_PER_CALL = 1000  # keeps an Acknowledge/ModifyAckDeadline request well under 512 KB
MIN_ACK_DEADLINE_SECONDS = 10  # Pub/Sub's floor for ack deadlines and lease extensions
MAX_LEASE_SECONDS = 3600  # how long a message may wait in this process before it lapses


class Puller(Protocol):
    """Receives and settles messages of one subscription. Messages have the fields of
    the library's streaming ones: message_id, ack_id, data, attributes, publish_time,
    delivery_attempt."""

    def pull(self, max_messages: int, timeout: float) -> list[Any]:
        """Up to ``max_messages``; an empty list when none arrived within ``timeout``."""
        ...

    def ack(self, messages: Sequence[Any]) -> None: ...

    def nack(self, messages: Sequence[Any]) -> None:
        """Hand back at once; the subscription's retry policy spaces the redelivery."""
        ...

    def release(self, messages: Sequence[Any]) -> None:
        """Best-effort nack: if it fails, the lease's expiry redelivers them."""
        ...

    def close(self, held: Sequence[Any]) -> None:
        """Stop receiving; ``held`` are the messages pulled and never settled."""
        ...


class StreamingPuller:
    """Streaming pull; the library leases, extends and settles asynchronously."""

    def __init__(
        self, subscriber: Any, subscription_path: str, policy: DeliveryPolicy, max_bytes: int
    ) -> None:
        self.subscriber = subscriber
        self.subscription = subscription_path
        self.policy = policy
        self.max_bytes = max_bytes
        self._queue: queue.Queue[Any] = queue.Queue()
        self._stream: Any = None
        self._lock = threading.Lock()

    def _ensure_stream(self) -> None:
        with self._lock:
            if self._stream is not None and not self._stream.done():
                return
            failed, self._stream = self._stream, None
        if failed is not None:
            _raise_stream_error(failed)
        deadline = max(int(self.policy.ack_deadline_seconds), MIN_ACK_DEADLINE_SECONDS)
        flow = pubsub_v1.types.FlowControl(
            max_messages=self.policy.max_in_flight,
            max_bytes=self.max_bytes,
            # The library keeps extending leases while messages wait in this process;
            # a message handed to the worker and left unsettled past the ack deadline is
            # nacked by the adapter instead. Letting leases lapse would rely on the server
            # redelivering expired messages on a live stream, which the emulator does not.
            max_lease_duration=MAX_LEASE_SECONDS,
            min_duration_per_lease_extension=deadline,
            max_duration_per_lease_extension=deadline,
        )
        # One callback thread keeps the queue in the order Pub/Sub delivered.
        scheduler = ThreadScheduler(executor=ThreadPoolExecutor(max_workers=1))
        stream = self.subscriber.subscribe(
            self.subscription, self._queue.put, flow_control=flow, scheduler=scheduler
        )
        with self._lock:
            self._stream = stream

    def pull(self, max_messages: int, timeout: float) -> list[Any]:
        self._ensure_stream()
        messages: list[Any] = []
        try:
            messages.append(self._queue.get(timeout=max(timeout, 0.0)))
            while len(messages) < max_messages:
                messages.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return messages

    def ack(self, messages: Sequence[Any]) -> None:
        for message in messages:
            message.ack()

    def nack(self, messages: Sequence[Any]) -> None:
        for message in messages:
            message.nack()

    release = nack

    def close(self, held: Sequence[Any]) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()  # the library nacks what it still holds, ``held`` included
            # A cancelled stream reports its cancellation as an exception.
            with contextlib.suppress(Exception):
                stream.result(timeout=10)
        while True:  # hand back what the worker never pulled, for a prompt redelivery
            try:
                self._queue.get_nowait().nack()
            except queue.Empty:
                break


def _raise_stream_error(stream: Any) -> None:
    try:
        error = stream.exception(timeout=0)
    except Exception as exc:  # cancelled or still pending: nothing to report
        error = exc
    raise BrokerUnavailable(f"Pub/Sub streaming pull stopped: {type(error).__name__}")


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
        """Best-effort nack: if it fails, the ack deadline redelivers them."""
        with contextlib.suppress(BrokerUnavailable):
            self.nack(messages)

    def close(self, held: Sequence[PulledMessage]) -> None:
        self.release(held)

    def _call(self, method: str, request: dict[str, Any]) -> None:
        try:
            getattr(self.subscriber, method)(request=request, timeout=RPC_TIMEOUT_SECONDS)
        except google_errors.GoogleAPIError as exc:
            raise BrokerUnavailable(f"Pub/Sub {method} failed: {type(exc).__name__}") from exc


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + MAX_IDS_PER_CALL] for i in range(0, len(ids), MAX_IDS_PER_CALL)]
