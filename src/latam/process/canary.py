"""The canary process's HTTP client: the API's key, and a Google ID token where the API
sits behind Cloud Run's IAM invoker check (``latam.canary`` runs the rounds through it).

Cloud Run accepts the ID token in ``X-Serverless-Authorization`` when the app uses
``Authorization`` itself, as the API does for its keys, and passes ``Authorization``
through: so one request carries both, each checked by its own gate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator

import httpx

ID_TOKEN_HEADER = "X-Serverless-Authorization"  # noqa: S105  # nosec B105 (a header name)
# Fetched again this long before it expires (Google's ID tokens live an hour), so no
# request leaves with a token that expires on the way.
REFRESH_MARGIN_SECONDS = 300.0


class IdTokenError(httpx.RequestError):
    """No ID token could be had: the request is not sent, and the round fails."""


class GoogleIdToken(httpx.Auth):
    """An ``httpx`` auth that adds a Google-signed ID token for ``audience`` (the API's
    URL) to every request; ``fetch(audience)`` mints one, by default from the metadata
    server as the workload's own service account."""

    def __init__(
        self,
        audience: str,
        *,
        fetch: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
        self._fetch = fetch or google_id_token
        self._clock = clock
        self._token = ""  # nosec B105 (no token fetched yet)
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        try:
            token = self.token()
        except Exception as exc:  # google-auth's errors, a transport's, an unreadable token
            raise IdTokenError(f"no ID token ({type(exc).__name__})", request=request) from exc
        request.headers[ID_TOKEN_HEADER] = f"Bearer {token}"
        yield request

    def token(self) -> str:
        """The current token, fetched again when it is about to expire."""
        with self._lock:
            if self._clock() >= self._expires_at - REFRESH_MARGIN_SECONDS:
                token = self._fetch(self.audience)
                self._expires_at = expiry(token)
                self._token = token
            return self._token


def google_id_token(audience: str) -> str:
    """A Google-signed ID token for ``audience``: from the metadata server on Cloud Run,
    else from Application Default Credentials (a service account key or impersonation)."""
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    token: str = id_token.fetch_id_token(Request(), audience)  # type: ignore[no-untyped-call]
    return token


def expiry(token: str) -> float:
    """The ``exp`` claim (Unix time) of a JWT, read without checking its signature: the
    token is ours to send, not to trust; Cloud Run checks it."""
    from google.auth import jwt

    claims = jwt.decode(token, verify=False)  # type: ignore[no-untyped-call]
    return float(claims["exp"])


def canary_client(
    base_url: str, *, api_key: str | None, id_token_audience: str | None, timeout: float
) -> httpx.Client:
    """The client the canary's rounds go through: the API key as a bearer token, and an
    ID token for ``id_token_audience`` when one is given."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    auth = GoogleIdToken(id_token_audience) if id_token_audience else None
    return httpx.Client(base_url=base_url, headers=headers, timeout=timeout, auth=auth)
