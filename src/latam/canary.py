"""The synthetic canary: a marked message published and read back through the API.

``latam canary`` runs rounds every ``interval`` seconds. A round publishes one message
(``{"canary": true, "sent_at": …}`` with a fresh id) to the canary topic with
``POST /v1/topics/{id}/messages``, then reads the topic's recent messages with
``GET /v1/topics/{id}/messages?since=…`` until the id is there or ``timeout`` passes.
So one round exercises what a producer and a reader both need: the API, the broker, the
worker and the store, end to end. Each round counts in ``latam_canary_rounds_total`` by
result, a success observes ``latam_canary_round_trip_seconds`` and moves
``latam_canary_last_success_timestamp_seconds``; the alerts ``LatamCanaryFailing`` and
``LatamCanaryStale`` page on them (``docs/runbooks.md``).

The counters exist from the canary's start, before it has found its topic: a canary that
cannot even look its topic up counts failed rounds, and one that never gets that far
still shows no successful round.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from latam import metrics
from latam.domain import isoformat
from latam.loader import http_topic_id

log = logging.getLogger("latam")
# The read-back looks this far before the round's start: the API's clock, which stamps
# ``published_at``, may differ from the canary's by up to this much.
CLOCK_SKEW = timedelta(seconds=120)
POLL_SECONDS = 0.1
# The topic the canary creates keeps its marked messages a day (every worker deletes
# older ones), so a canary running every 30 s for a year stores 2,880 rows, not a million.
RETENTION_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class Round:
    result: str  # one of metrics.CANARY_RESULTS
    seconds: float  # from the publish request until read back (or until it failed)
    detail: str = ""


class Canary:
    """Rounds against topic ``topic`` of one API, through ``client`` (its base URL and
    key); the topic is created when missing (with ``RETENTION_SECONDS``), and looked up
    again when it disappears."""

    def __init__(
        self,
        client: httpx.Client,
        topic: str,
        *,
        timeout: float,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.topic = topic
        self.timeout = timeout
        self.stop = stop or threading.Event()
        self.path: str | None = None
        self.rounds = {
            result: metrics.CANARY_ROUNDS.labels(topic=topic, result=result)
            for result in metrics.CANARY_RESULTS  # every series exists from the start
        }
        self.round_trip = metrics.CANARY_ROUND_TRIP.labels(topic=topic)
        self.last_success = metrics.CANARY_LAST_SUCCESS.labels(topic=topic)

    def round(self) -> Round:
        started = time.monotonic()
        try:
            outcome = self._round(started, started + self.timeout)
        except _Failed as failed:
            outcome = Round(failed.result, time.monotonic() - started, failed.detail)
        return self._record(outcome)

    def _round(self, started: float, deadline: float) -> Round:
        message_id = f"canary-{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        since = isoformat(now - CLOCK_SKEW)
        data = {"canary": True, "sent_at": isoformat(now)}
        body = {"messages": [{"id": message_id, "data": data}]}
        with _failing_as("publish_failed"):
            if self.path is None:  # the client's timeout bounds each of these requests
                topic_id = http_topic_id(
                    self.client, self.topic, create=True, retention_seconds=RETENTION_SECONDS
                )
                self.path = f"/v1/topics/{topic_id}/messages"
            path = self.path
            published = self.client.post(path, json=body, timeout=_left(deadline))
        if published.status_code == 404:
            self.path = None  # the topic was deleted: it is made again next round
        if published.status_code != 202:
            raise _Failed("publish_failed", f"HTTP {published.status_code} publishing")
        while not self.stop.is_set():
            with _failing_as("read_failed"):
                if self._stored(path, message_id, since, deadline):
                    return Round("ok", time.monotonic() - started)
            if time.monotonic() >= deadline:
                break
            self.stop.wait(POLL_SECONDS)
        return Round(
            "timeout", time.monotonic() - started, f"not read back within {self.timeout:g} s"
        )

    def _stored(self, path: str, message_id: str, since: str, deadline: float) -> bool:
        """Whether ``message_id`` is among the topic's messages published from ``since``."""
        cursor: str | None = None
        while time.monotonic() < deadline:
            params: dict[str, str | int] = {"since": since, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = self.client.get(path, params=params, timeout=_left(deadline))
            if page.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"HTTP {page.status_code} reading back", request=page.request, response=page
                )
            body: dict[str, Any] = page.json()
            if any(item["id"] == message_id for item in body["data"]):
                return True
            cursor = body["next_cursor"]
            if not cursor:
                return False
        return False

    def _record(self, outcome: Round) -> Round:
        self.rounds[outcome.result].inc()
        if outcome.result == "ok":
            self.round_trip.observe(outcome.seconds)
            self.last_success.set(time.time())
            log.info("canary round ok", extra={"seconds": round(outcome.seconds, 3)})
        else:
            log.warning(
                "canary round failed", extra={"result": outcome.result, "detail": outcome.detail}
            )
        return outcome

    def run(self, *, interval: float, rounds: int) -> list[Round]:
        """``rounds`` rounds (0: until ``stop``), one every ``interval`` seconds."""
        done: list[Round] = []
        while not self.stop.is_set() and (rounds == 0 or len(done) < rounds):
            started = time.monotonic()
            outcome = self.round()
            if rounds:
                done.append(outcome)
                if len(done) >= rounds:
                    break
            self.stop.wait(max(interval - (time.monotonic() - started), 0))
        return done


class _Failed(Exception):
    def __init__(self, result: str, detail: str) -> None:
        super().__init__(detail)
        self.result = result
        self.detail = detail


@contextmanager
def _failing_as(result: str) -> Iterator[None]:
    """A request's failure as a failed round: ``result``, or ``timeout`` when it timed out."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise _Failed("timeout", f"{type(exc).__name__} ({result.split('_')[0]})") from exc
    except httpx.HTTPStatusError as exc:
        raise _Failed(result, str(exc).splitlines()[0]) from exc
    except httpx.HTTPError as exc:
        raise _Failed(result, type(exc).__name__) from exc
    except (ValueError, KeyError, TypeError) as exc:  # an answer not shaped as documented
        raise _Failed(result, f"unexpected answer ({type(exc).__name__})") from exc


def _left(deadline: float) -> httpx.Timeout:
    """What is left of the round, for each phase of one request."""
    return httpx.Timeout(max(deadline - time.monotonic(), 0.05))
