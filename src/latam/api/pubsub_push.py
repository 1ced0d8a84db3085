"""``POST /v1/pubsub/push``: the endpoint of a Pub/Sub push subscription.

Pub/Sub signs each push with a Google OIDC token; it is verified against Google's
certificates, then the claims must name the configured audience
(``LATAM_PUBSUB_PUSH_AUDIENCE``) and service account
(``LATAM_PUBSUB_PUSH_SERVICE_ACCOUNT``, with a verified email). The envelope's message
goes through the worker's own ingest (``latam.ingest``); the answer tells Pub/Sub what
to do: 204 once stored (ack), 400 for a message that can never be stored (the subscription's
dead-letter policy takes it), 503 to be retried with the subscription's backoff.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from google.auth import exceptions as auth_errors
from google.auth import transport
from google.oauth2 import id_token
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from latam.api.problems import documented, problem
from latam.domain import NewMessage, parse_timestamp, utcnow
from latam.errors import InvalidMessage, TransientError
from latam.ingest import Ingest

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/pubsub", tags=["pubsub push"])
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})


def _auth_request(request: Request) -> transport.Request:
    """The HTTP client google-auth fetches certificates with (tests inject their own)."""
    injected = getattr(request.app.state, "google_auth_request", None)
    if injected is not None:
        return injected  # type: ignore[no-any-return]
    from google.auth.transport.requests import Request as HttpRequest

    made: transport.Request = HttpRequest()
    request.app.state.google_auth_request = made
    return made


def _authorize(request: Request) -> Response | None:
    """None when the bearer token is Google's and names us; else a 401/403 problem."""
    settings = request.app.state.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return problem(401, "a Google-signed bearer token is required")
    try:
        claims: dict[str, Any] = dict(id_token.verify_token(token, _auth_request(request)))
    except (ValueError, auth_errors.GoogleAuthError) as exc:
        log.warning("push token rejected: %s", type(exc).__name__)
        return problem(401, "the bearer token is not a valid Google ID token")
    if claims.get("iss") not in GOOGLE_ISSUERS:
        return problem(401, "the bearer token was not issued by Google")
    audience = settings.pubsub_push_audience
    account = settings.pubsub_push_service_account
    if not audience or not account:
        return problem(403, "the push endpoint is not configured")
    if claims.get("aud") != audience:
        return problem(403, "the token's audience is not this endpoint")
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
    """Store one pushed message; 204 only after the store committed."""
    body = await request.body()
    # Certificate fetches and the store are blocking: keep them off the event loop.
    return await run_in_threadpool(_handle, request, body)


def _handle(request: Request, body: bytes) -> Response:
    if (refused := _authorize(request)) is not None:
        return refused
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
        return problem(503, "the store is unavailable; retry later", headers={"Retry-After": "5"})
    if outcome.aside:
        why = outcome.aside[0][1]
        log.warning("pushed message refused: %s", why.reason)
        return problem(400, f"the pushed message cannot be stored: {why.label}", slug=why.label)
    return Response(status_code=204)
