"""``POST /v1/pubsub/push``: the endpoint of a Pub/Sub push subscription.

Pub/Sub signs each push with a Google OIDC token; it is verified against Google's
certificates, then the claims must name the configured audience
(``LATAM_PUBSUB_PUSH_AUDIENCE``) and service account
(``LATAM_PUBSUB_PUSH_SERVICE_ACCOUNT``, with a verified email). The envelope's message
goes through the worker's own ingest (``latam.ingest``); the answer tells Pub/Sub what
to do: 204 once stored (ack), 400 for a message that can never be stored (the subscription's
dead-letter policy takes it), 503 to be retried with the subscription's backoff. The
route is mounted only where push is configured.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from google.auth import exceptions as auth_errors
from google.auth import jwt, transport
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from latam.api.problems import documented, problem
from latam.domain import NewMessage, parse_timestamp, utcnow
from latam.errors import InvalidMessage, TransientError
from latam.ingest import Ingest
from latam.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/pubsub", tags=["pubsub push"])
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
MAX_TOKEN_CHARS = 8192  # a Google ID token is about 1 KB
RETRY = {"Retry-After": "5"}


GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
CERTS_TIMEOUT_SECONDS = 5.0
CERTS_DEFAULT_SECONDS = 3600.0  # when Google's answer carries no max-age
CERTS_REFETCH_SECONDS = 60.0  # at most one early fetch a minute, for a key id not seen yet
CERTS_RETRY_SECONDS = 5.0  # after a failed fetch


class CertsUnavailable(Exception):
    """Google's certificate endpoint did not answer with certificates."""


class GoogleCerts:
    """Google's token-signing certificates, fetched once and kept for the max-age Google
    gives them (they rotate about daily); fetched again early, at most once a minute, for
    a key id not seen yet. google-auth's ``verify_token`` would fetch them on every push.
    After a failed fetch none is tried for ``CERTS_RETRY_SECONDS``: the certificates held
    serve meanwhile (Google's keys overlap when they rotate), or the push gets 503 at
    once instead of queueing behind a fetch that will time out."""

    def __init__(self, request: transport.Request, clock: Callable[[], float] = time.monotonic):
        self._request, self._clock = request, clock
        self._certs: dict[str, str] = {}
        self._expires = self._fetched = self._failed = -math.inf
        self._lock = threading.Lock()

    def for_token(self, token: str) -> dict[str, str]:
        kid = jwt.decode_header(token).get("kid")  # type: ignore[no-untyped-call]
        with self._lock:
            now = self._clock()
            stale = now >= self._expires
            unseen = kid is not None and kid not in self._certs
            due = stale or (unseen and now - self._fetched >= CERTS_REFETCH_SECONDS)
            if due and now - self._failed >= CERTS_RETRY_SECONDS:
                try:
                    self._fetch(now)
                except CertsUnavailable:
                    self._failed = now
                    if not self._certs:
                        raise
            elif due and not self._certs:
                raise CertsUnavailable("the last fetch failed; retrying shortly")
            return self._certs

    def _fetch(self, now: float) -> None:
        try:
            response = self._request(GOOGLE_CERTS_URL, method="GET", timeout=CERTS_TIMEOUT_SECONDS)
            certs = orjson.loads(response.data) if response.status == 200 else None
        except (auth_errors.TransportError, orjson.JSONDecodeError) as exc:
            raise CertsUnavailable(type(exc).__name__) from exc
        if not isinstance(certs, dict):
            raise CertsUnavailable(f"answer {response.status} is not a map of certificates")
        headers = {k.lower(): v for k, v in (response.headers or {}).items()}
        found = MAX_AGE.search(headers.get("cache-control", ""))
        ttl = min(float(found[1]), 6 * 3600.0) if found else CERTS_DEFAULT_SECONDS
        self._certs, self._fetched, self._expires = certs, now, now + ttl


MAX_AGE = re.compile(r"max-age=(\d+)")


def _certs(request: Request) -> GoogleCerts:
    certs: GoogleCerts | None = getattr(request.app.state, "google_certs", None)
    if certs is None:
        # Tests inject their own transport as ``google_auth_request``.
        made = getattr(request.app.state, "google_auth_request", None)
        if made is None:
            from google.auth.transport.requests import Request as HttpRequest

            made = HttpRequest()
        certs = request.app.state.google_certs = GoogleCerts(made)
    return certs


def _authorize(request: Request, settings: Settings) -> Response | None:
    """None when the bearer token is Google's and names us; else a 401/403 problem
    (503 while Google's certificates cannot be fetched: Pub/Sub retries)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        return problem(401, "a Google-signed bearer token is required")
    try:
        certs = _certs(request).for_token(token)
        claims: dict[str, Any] = dict(
            jwt.decode(token, certs=certs, clock_skew_in_seconds=10)  # type: ignore[no-untyped-call]
        )
    except CertsUnavailable as exc:
        log.warning("Google's certificates cannot be fetched: %s", exc)
        return problem(503, "token certificates unavailable; retry later", headers=RETRY)
    except (ValueError, TypeError, AttributeError, auth_errors.GoogleAuthError) as exc:
        # (A header that is not a JSON object, or a "kid" that is not a string, is one.)
        log.warning("push token rejected: %s", type(exc).__name__)
        return problem(401, "the bearer token is not a valid Google ID token")
    if claims.get("iss") not in GOOGLE_ISSUERS:
        return problem(401, "the bearer token was not issued by Google")
    if claims.get("aud") != settings.pubsub_push_audience:
        return problem(403, "the token's audience is not this endpoint")
    account = settings.pubsub_push_service_account
    if claims.get("email") != account or claims.get("email_verified") is not True:
        return problem(403, "the token's service account is not allowed to push")
    return None


def _decode(envelope: Any, ingest: Ingest) -> NewMessage:
    """The envelope's message as a ``NewMessage``; InvalidMessage when malformed."""
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        raise InvalidMessage("envelope has no 'message' object", reason="bad_envelope")
    attributes = message.get("attributes") or {}
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(attributes, dict) or not isinstance(message_id, str):
        raise InvalidMessage("envelope lacks attributes or messageId", reason="bad_envelope")
    if not all(isinstance(v, str) for v in attributes.values()):
        raise InvalidMessage("attribute values must be strings", reason="invalid_attributes")
    try:
        body = base64.b64decode(message.get("data", ""), validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidMessage("message.data is not base64", reason="bad_envelope") from exc
    try:
        published = parse_timestamp(str(message.get("publishTime") or ""))
    except (ValueError, OverflowError):
        published = utcnow()
    return ingest.decode(
        body,
        {str(k): v for k, v in attributes.items()},
        fallback_id=message_id,
        fallback_published_at=published,
    )


@router.post("/push", status_code=204, response_class=Response, responses=documented(400))
async def push(request: Request) -> Response:
    """Store one pushed message; 204 only after the store committed. The token is checked
    before the body is read, so an unauthenticated caller costs no body and no store."""
    settings: Settings = request.app.state.settings
    if not settings.pubsub_push_enabled:
        return problem(404, "push delivery is not configured here")
    # A certificate fetch (once an hour or so) and the store block: off the event loop.
    if (refused := await run_in_threadpool(_authorize, request, settings)) is not None:
        return refused
    body = await request.body()
    return await run_in_threadpool(_handle, request, body)


def _handle(request: Request, body: bytes) -> Response:
    ingest = request.app.state.service.ingest
    try:
        message = _decode(orjson.loads(body), ingest)
    except (orjson.JSONDecodeError, InvalidMessage) as exc:
        reason = getattr(exc, "reason", "bad_envelope")
        return problem(400, f"the pushed message cannot be stored: {reason}", slug=reason)
    try:
        outcome = ingest.store_batch([(0, message)])
    except TransientError as exc:
        log.warning("push not stored, Pub/Sub will retry: %s", exc.detail)
        return problem(503, "the store is unavailable; retry later", headers=RETRY)
    if outcome.aside:
        why = outcome.aside[0][1]
        log.warning("pushed message refused: %s", why.reason)
        return problem(400, f"the pushed message cannot be stored: {why.label}", slug=why.label)
    return Response(status_code=204)
