"""Who is looking at the console, and what they may do.

Open (no sign-in) only when API keys are off and the API binds to loopback: whoever can
reach it is on this machine, and acts as an admin. Otherwise a visitor signs in with an
API key (``/console/login``) and gets a session cookie (``sessions``); each request reads
that key again (cached ``KEY_SECONDS`` at most), so a revoked key's session ends at once on
the process that revoked it and within ``KEY_SECONDS`` on every other. Every POST carries
the session's CSRF token, in the form (``csrf``) or the ``X-CSRF-Token`` header (htmx).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request

from latam.console.sessions import COOKIE, Session, Signer, fingerprint
from latam.console.web import Form, Refused, SignInRequired, refusal
from latam.errors import LatamError
from latam.keys import BOOTSTRAP_KEY, ApiKey, KeyVerifier, hash_secret
from latam.service import Service
from latam.settings import Settings

audit_log = logging.getLogger("latam.audit")
KEY_SECONDS = 1.0
CSRF_HEADER = "x-csrf-token"


class Limiter(Protocol):
    """The API's failed-authentication budget per client address."""

    def acquire(self, caller: str, cost: float = 1.0) -> float: ...
    def refund(self, caller: str, cost: float = 1.0) -> None: ...


@dataclass(frozen=True, slots=True)
class Viewer:
    """The one looking: a signed-in key, or (``key_id`` None) the open console."""

    key_id: str | None
    name: str
    scopes: frozenset[str]
    csrf: str
    signed_in: bool

    def may(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def audit(key_id: str | None, action: str, **fields: object) -> None:
    """Log a change made through the console, as the API logs its own (``latam.audit``),
    with the id of the key that made it (None on the open console); never a secret."""
    extra = {"action": action, "key_id": key_id, "via": "console", **fields}
    audit_log.info("%s", action, extra=extra)


def refusal_for_key(key: ApiKey) -> str | None:
    """Why ``key`` may not use the console; None when it may."""
    if not key.allows("read"):
        return "this key has no read scope"
    if key.topics is not None:
        return "keys bound to topics cannot use the console, which shows every topic"
    return None


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_local(request: Request) -> bool:
    """A client on this machine (after the proxy headers uvicorn trusts) that names this
    machine in its Host header: a page elsewhere that rebinds its own domain to 127.0.0.1
    still sends that domain, and a proxy forwarding someone else gives their address."""
    client = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False
    return loopback and (request.url.hostname or "").lower() in LOOPBACK_NAMES


class Gate:
    """The console's access control in one API process: sessions, CSRF, scopes."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyVerifier,
        service: Service,
        failures: Limiter,
        signer: Signer,
    ) -> None:
        self.open = not settings.auth_enabled and settings.loopback
        self.keys = keys
        self.service = service
        self.failures = failures
        self.signer = signer
        bootstrap = settings.bootstrap_api_key
        self._bootstrap = bootstrap.get_secret_value() if bootstrap else None
        self._cache: dict[str, tuple[float, tuple[ApiKey, str] | None]] = {}
        # Sessions signed out here, by nonce, until they would have expired anyway.
        self._signed_out: dict[str, int] = {}

    # -- reading a request ------------------------------------------------------------
    async def viewer(self, request: Request, scope: str = "read") -> Viewer:
        """The viewer of a request that may ``scope``; SignInRequired or 403 otherwise."""
        session = self._live(self.signer.read(request.cookies.get(COOKIE)))
        if self.open:
            if not is_local(request):
                raise Refused(
                    403,
                    "this console is open (API keys are off) and answers only this machine"
                    " addressing it as localhost, 127.0.0.1 or [::1]",
                )
            if session is None:  # a first visit: a session, for the CSRF token
                session = self._start(request)
            found = Viewer(None, "local", frozenset({"admin"}), self.signer.csrf(session), False)
        else:
            found = await self._signed_in(session)
        request.state.console_viewer = found
        if not found.may(scope):
            raise Refused(403, f"the key {found.name!r} may not {_verb(scope)}")
        return found

    async def poster(self, request: Request, form: Form, scope: str) -> Viewer:
        """The viewer of a POST: its CSRF token first (403 without it), then ``viewer``."""
        session = self._live(self.signer.read(request.cookies.get(COOKIE)))
        token = form.get("csrf") or request.headers.get(CSRF_HEADER)
        if session is None or not self.signer.csrf_ok(session, token):
            raise Refused(403, "the form has expired or did not come from this console; reload it")
        return await self.viewer(request, scope)

    def visitor_csrf(self, request: Request) -> str:
        """The CSRF token of the sign-in form: of the visitor's session, started if need be."""
        session = self.signer.read(request.cookies.get(COOKIE))
        return self.signer.csrf(session or self._start(request))

    def visitor_csrf_ok(self, request: Request, form: Form) -> bool:
        session = self.signer.read(request.cookies.get(COOKIE))
        return session is not None and self.signer.csrf_ok(session, form.get("csrf"))

    # -- signing in and out -----------------------------------------------------------
    async def sign_in(self, request: Request, token: str) -> ApiKey | str:
        """The key ``token`` is, with a new session set on the response; or why not."""
        address = request.client.host if request.client else "unknown"
        if (wait := self.failures.acquire(address)) > 0:
            raise Refused(429, f"too many failed sign-ins from this address; wait {wait:.0f} s")
        try:
            key = await self.service.in_store_thread(self.keys.verify, token.strip())
        except LatamError as exc:
            raise refusal(exc) from exc
        if key is None:
            return "this is not a valid API key"
        self.failures.refund(address)
        if (why := refusal_for_key(key)) is not None:
            return why
        secret_hash = (
            hash_secret(token.strip()) if key is BOOTSTRAP_KEY else await self._secret_hash(key)
        )
        cookie = self.signer.issue(key.key_id, fingerprint(secret_hash))
        request.state.console_cookie = (cookie, self.signer.lifetime)
        return key

    def sign_out(self, request: Request) -> None:
        """Clear the cookie, and refuse the session here from now on even if it is replayed
        (other API processes refuse it when it expires, at most 8 hours later)."""
        session = self.signer.read(request.cookies.get(COOKIE))
        if session is not None:
            now = int(time.time())
            self._signed_out = {n: e for n, e in self._signed_out.items() if e > now}
            self._signed_out[session.nonce] = session.expires
        request.state.console_cookie = ("", 0)

    def _live(self, session: Session | None) -> Session | None:
        if session is not None and session.nonce in self._signed_out:
            return None
        return session

    def forget(self, key_id: str) -> None:
        """Drop what is cached of ``key_id`` (it was just revoked here)."""
        self._cache.pop(key_id, None)
        self.keys.forget(key_id)

    # -- inside -------------------------------------------------------------------------
    def _start(self, request: Request) -> Session:
        cookie = self.signer.issue()
        request.state.console_cookie = (cookie, self.signer.lifetime)
        session = self.signer.read(cookie)
        if session is None:  # pragma: no cover - a cookie just issued always reads back
            raise Refused(500, "the console could not start a session")
        return session

    async def _signed_in(self, session: Session | None) -> Viewer:
        if session is None or session.key_id is None:
            raise SignInRequired
        key = await self._live_key(session)
        if key is None or refusal_for_key(key) is not None:
            raise SignInRequired
        return Viewer(key.key_id, key.name, key.scopes, self.signer.csrf(session), True)

    async def _live_key(self, session: Session) -> ApiKey | None:
        """The session's key while it exists, is not revoked and has the same secret."""
        key_id = session.key_id or ""
        if key_id == BOOTSTRAP_KEY.key_id:
            secret = self._bootstrap
            same = secret is not None and _same(fingerprint(hash_secret(secret)), session)
            return BOOTSTRAP_KEY if same else None
        found = await self._find(key_id)
        if found is None or found[0].revoked_at is not None:
            return None
        return found[0] if _same(fingerprint(found[1]), session) else None

    async def _secret_hash(self, key: ApiKey) -> str:
        found = await self._find(key.key_id)
        return found[1] if found else ""

    async def _find(self, key_id: str) -> tuple[ApiKey, str] | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < KEY_SECONDS:
            return cached[1]
        try:
            found = await self.service.in_store_thread(self.keys.store.find, key_id)
        except LatamError as exc:
            raise refusal(exc) from exc
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (now, found)
        return found


def _same(key_fingerprint: str, session: Session) -> bool:
    return hmac.compare_digest(key_fingerprint, session.fingerprint)


def _verb(scope: str) -> str:
    return {"read": "read here", "admin": "change this (admin scope needed)"}.get(scope, scope)
