"""The synthetic canary: a marked message published and read back through the API.

``latam canary`` runs rounds every ``interval`` seconds. A round publishes one message
(``{"canary": true, "sent_at": …}`` with a fresh id) to the canary topic with
``POST /v1/topics/{id}/messages``, then reads the topic's recent messages with
``GET /v1/topics/{id}/messages?since=…`` until the id is there or ``timeout`` passes.
So one round exercises what a producer and a reader both need: the API, the broker, the
worker and the store, end to end. Each round counts in ``latam_canary_rounds_total``
by result, a success observes ``latam_canary_round_trip_seconds`` and moves
``latam_canary_last_success_timestamp_seconds``; the alerts ``LatamCanaryFailing`` and
``LatamCanaryStale`` page on them (``docs/runbooks.md``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from latam import metrics
from latam.domain import isoformat

log = logging.getLogger("latam")
# The read-back looks this far before the round's start: the API's clock, which stamps
# ``published_at``, may differ from the canary's by up to this much.
CLOCK_SKEW = timedelta(seconds=120)
POLL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Round:
    result: str  # one of metrics.CANARY_RESULTS
    seconds: float  # from the publish request until read back (or until it failed)
    detail: str = ""


class Canary:
    """Rounds against one topic of one API, through ``client`` (its base URL and key)."""

    def __init__(self, client: httpx.Client, topic: str, topic_id: int, *, timeout: float) -> None:
        self.client = client
        self.path = f"/v1/topics/{topic_id}/messages"
        self.timeout = timeout
        self.rounds = {
            result: metrics.CANARY_ROUNDS.labels(topic=topic, result=result)
            for result in metrics.CANARY_RESULTS  # every series exists from the start
        }
        self.round_trip = metrics.CANARY_ROUND_TRIP.labels(topic=topic)
        self.last_success = metrics.CANARY_LAST_SUCCESS.labels(topic=topic)
        self.last_success.set(time.time())

    def round(self) -> Round:
        message_id = f"canary-{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        since = isoformat(now - CLOCK_SKEW)
        started = time.monotonic()
        body = {
            "messages": [{"id": message_id, "data": {"canary": True, "sent_at": isoformat(now)}}]
        }
        try:
            published = self.client.post(self.path, json=body, timeout=self.timeout)
        except httpx.HTTPError as exc:
            return self._record(Round("publish_failed", self._since(started), type(exc).__name__))
        if published.status_code != 202:
            detail = f"HTTP {published.status_code}"
            return self._record(Round("publish_failed", self._since(started), detail))
        deadline = started + self.timeout
        while True:
            try:
                if self._stored(message_id, since, deadline):
                    return self._record(Round("ok", self._since(started)))
            except httpx.HTTPError as exc:
                return self._record(Round("read_failed", self._since(started), str(exc)))
            if time.monotonic() >= deadline:
                detail = f"not read back within {self.timeout:g} s"
                return self._record(Round("timeout", self._since(started), detail))
            time.sleep(POLL_SECONDS)

    def _stored(self, message_id: str, since: str, deadline: float) -> bool:
        """Whether ``message_id`` is among the topic's messages published from ``since``."""
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"since": since, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            left = max(deadline - time.monotonic(), 0.5)
            page = self.client.get(self.path, params=params, timeout=left)
            if page.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"HTTP {page.status_code} reading the canary topic",
                    request=page.request,
                    response=page,
                )
            body = page.json()
            if any(item["id"] == message_id for item in body["data"]):
                return True
            cursor = body.get("next_cursor")
            if not cursor:
                return False

    @staticmethod
    def _since(started: float) -> float:
        return time.monotonic() - started

    def _record(self, outcome: Round) -> Round:
        self.rounds[outcome.result].inc()
        if outcome.result == "ok":
            self.round_trip.observe(outcome.seconds)
            self.last_success.set(time.time())
            log.info("canary round ok", extra={"seconds": round(outcome.seconds, 3)})
        else:
            log.warning(
                "canary round failed",
                extra={"result": outcome.result, "detail": outcome.detail},
            )
        return outcome

    def run(self, *, interval: float, rounds: int, stop: threading.Event) -> list[Round]:
        """``rounds`` rounds (0: until ``stop``), one every ``interval`` seconds."""
        done: list[Round] = []
        while not stop.is_set() and (rounds == 0 or len(done) < rounds):
            started = time.monotonic()
            outcome = self.round()
            if rounds:
                done.append(outcome)
            if rounds and len(done) >= rounds:
                break
            stop.wait(max(interval - (time.monotonic() - started), 0))
        return done
