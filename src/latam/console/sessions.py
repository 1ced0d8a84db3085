"""Console sessions and CSRF tokens: signed, kept by the browser, bound to an API key.

A session cookie reads ``v1.<key id>.<fingerprint>.<expires>.<nonce>.<signature>``: the
id of the key that signed in (``-`` before signing in), a fingerprint of that key's
secret hash (so a rotated ``LATAM_BOOTSTRAP_API_KEY`` ends its sessions), the Unix time
it expires, 16 random bytes, and an HMAC-SHA256 of the rest under the console secret
(``LATAM_CONSOLE_SECRET``). The cookie never holds the key itself; every request checks
the key again (``gate``), so revoking it ends the session.

The CSRF token of a session is an HMAC of its nonce under the same secret: a
synchronizer token that needs no server-side storage, different for every session, and
useless without the session cookie (``SameSite=Strict``, ``HttpOnly``) it belongs to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "latam_console"
SESSION_SECONDS = 8 * 3600  # a session ends this long after signing in, whatever happens
VISITOR = "-"  # the key id of a session that has not signed in


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str | None  # None: not signed in
    fingerprint: str
    expires: int
    nonce: str


def fingerprint(secret_hash: str) -> str:
    """A short digest of a key's secret hash: it tells keys apart, and reveals nothing."""
    return hashlib.sha256(f"latam-console:{secret_hash}".encode()).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Signer:
    """Issues and reads session cookies and their CSRF tokens under one secret."""

    def __init__(
        self,
        secret: bytes,
        *,
        lifetime: int = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self.lifetime = lifetime
        self._clock = clock

    def issue(self, key_id: str | None = None, key_fingerprint: str = VISITOR) -> str:
        """A new session's cookie value, with a fresh nonce (and so a fresh CSRF token)."""
        expires = int(self._clock()) + self.lifetime
        fields = f"v1.{key_id or VISITOR}.{key_fingerprint}.{expires}.{secrets.token_hex(16)}"
        return f"{fields}.{self._sign(fields)}"

    def read(self, value: str | None) -> Session | None:
        """The session of a cookie value; None when it is missing, forged or expired."""
        if not value or len(value) > 256:
            return None
        fields, _, signature = value.rpartition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(fields).encode()):
            return None
        version, key_id, key_fingerprint, expires, nonce = (fields.split(".") + [""] * 5)[:5]
        if version != "v1" or not expires.isdigit() or int(expires) <= self._clock():
            return None
        return Session(None if key_id == VISITOR else key_id, key_fingerprint, int(expires), nonce)

    def csrf(self, session: Session) -> str:
        """The CSRF token every state-changing request of ``session`` must carry."""
        return self._sign(f"csrf.{session.nonce}")

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(
            (token or "").encode(), self.csrf(session).encode()
        )

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._secret, text.encode(), hashlib.sha256).digest())
