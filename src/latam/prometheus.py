"""A Prometheus HTTP API as a ``promql.PromqlSource`` (``GET /api/v1/query``).

Any Prometheus-compatible endpoint works: a Prometheus server (``make monitor`` starts
one on 127.0.0.1:9090), or Google Cloud Managed Service for Prometheus at
``https://monitoring.googleapis.com/v1/projects/PROJECT/location/global/prometheus``. On
that host requests carry an access token from Application Default Credentials (scope
``monitoring.read``; the caller's service account needs ``roles/monitoring.viewer``),
refreshed in a worker thread shortly before it expires, never on the event loop.

Every query is bounded: ``timeout`` seconds for the whole exchange, ``MAX_ANSWER_BYTES``
of answer. Failures become ``QueryFailed`` with a short reason; the exception's text goes
to the log at DEBUG only, since it may name hosts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import threading
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from anyio.to_thread import run_sync

from latam.promql import QueryFailed

log = logging.getLogger("latam")
GOOGLE_HOST = "monitoring.googleapis.com"
GOOGLE_SCOPE = "https://www.googleapis.com/auth/monitoring.read"
QUERY_TIMEOUT = 2.0  # seconds per query, connect to last byte
TOKEN_TIMEOUT = 5.0  # seconds to load or refresh the access token
MAX_ANSWER_BYTES = 1024 * 1024  # a bad ratio is one sample: anything near this is garbage


class Credentials(Protocol):
    """The part of ``google.auth.credentials.Credentials`` used here."""

    @property
    def valid(self) -> bool: ...
    def refresh(self, request: Any) -> None: ...
    def apply(self, headers: dict[str, str], token: str | None = None) -> None: ...


class PrometheusSource:
    """Instant queries against the Prometheus HTTP API at ``url`` (its base, without
    ``/api/v1``); ``credentials`` (default: Application Default Credentials, loaded at
    first use) authenticate requests when ``url`` is on ``GOOGLE_HOST``."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = QUERY_TIMEOUT,
        credentials: Credentials | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/api/v1/query"
        self.timeout = timeout
        self.google = urlsplit(url).hostname == GOOGLE_HOST
        self._credentials = credentials
        self._transport = transport
        self._refreshing = threading.Lock()  # one token refresh at a time, whoever waits
        self._tls: ssl.SSLContext | None = None  # built once: loading the CAs takes ~20 ms

    async def evaluate(self, queries: Sequence[str]) -> list[list[float] | QueryFailed]:
        try:
            headers = await self._auth_headers()
        except QueryFailed as failed:
            return [failed for _ in queries]
        # A client per evaluation: it lives in the event loop that uses it, and a status
        # page evaluates a handful of queries every 30 s at most.
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        async with httpx.AsyncClient(
            headers=headers, timeout=self.timeout, transport=self._transport, verify=self._tls
        ) as client:
            return list(await asyncio.gather(*(self._query(client, q) for q in queries)))

    async def _query(self, client: httpx.AsyncClient, query: str) -> list[float] | QueryFailed:
        try:
            async with asyncio.timeout(self.timeout):
                status, body = await _fetch(client, self.endpoint, query)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return _failed("metrics query timed out", exc)
        except httpx.HTTPError as exc:
            return _failed("metrics source unreachable", exc)
        except _TooLarge as exc:
            return _failed("metrics source gave an invalid answer", exc)
        if status in (401, 403):
            return QueryFailed(f"metrics source refused access (HTTP {status})")
        if status != 200:
            return QueryFailed(f"metrics query failed (HTTP {status})")
        try:
            return parse_answer(body)
        except QueryFailed as failed:
            return failed

    async def _auth_headers(self) -> dict[str, str]:
        if not self.google:
            return {}
        try:
            async with asyncio.timeout(TOKEN_TIMEOUT):
                credentials = await run_sync(self._fresh_credentials, abandon_on_cancel=True)
        except TimeoutError as exc:
            raise _failed("metrics source credentials timed out", exc) from exc
        headers: dict[str, str] = {}
        credentials.apply(headers)
        return headers

    def _fresh_credentials(self) -> Credentials:
        """The credentials with a valid token: loaded and refreshed here, in a thread,
        as both may block (files, the metadata server, Google's token endpoint)."""
        from google.auth import default
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request

        with self._refreshing:
            try:
                if self._credentials is None:
                    self._credentials, _project = default(scopes=[GOOGLE_SCOPE])
                if not self._credentials.valid:  # False from shortly before expiry
                    self._credentials.refresh(Request())
            except (GoogleAuthError, OSError) as exc:
                raise _failed("metrics source credentials unavailable", exc) from exc
            return self._credentials


class _TooLarge(Exception):
    pass


async def _fetch(client: httpx.AsyncClient, endpoint: str, query: str) -> tuple[int, bytes]:
    """The status and body of one query; at most ``MAX_ANSWER_BYTES`` of body is read."""
    async with client.stream("GET", endpoint, params={"query": query}) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise _TooLarge(f"answer past {MAX_ANSWER_BYTES} bytes")
        return response.status_code, bytes(body)


def parse_answer(body: bytes) -> list[float]:
    """The sample values of an instant query's answer (a vector or a scalar)."""
    try:
        answer = orjson.loads(body)
        if answer["status"] != "success":
            raise QueryFailed("metrics query failed")
        data = answer["data"]
        if data["resultType"] == "vector":
            values = [float(series["value"][1]) for series in data["result"]]
        elif data["resultType"] == "scalar":
            values = [float(data["result"][1])]
        else:
            raise QueryFailed("metrics source gave an invalid answer")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise _failed("metrics source gave an invalid answer", exc) from exc
    if any(math.isinf(value) for value in values):
        raise QueryFailed("metrics source gave an invalid answer")
    return values


def _failed(reason: str, exc: BaseException) -> QueryFailed:
    log.debug("status: %s: %s: %s", reason, type(exc).__name__, exc)
    return QueryFailed(reason)
