"""API keys with scopes, and per-key rate limiting.

A key reads ``lt_<key_id>_<secret>``: ``key_id`` (public, 12 hex chars) finds the row,
``secret`` (32 random bytes, 256 bits) is checked against its SHA-256 in constant time.
Only the hash is stored; the full key is shown once, at creation. SHA-256 without a slow
KDF is the right tool here because the secret is random, not a human password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select, update

from latam.domain import utcnow
from latam.errors import InvalidRequest, NotFound
from latam.storage.dialects import translate_errors
from latam.storage.schema import api_keys

SCOPES = ("read", "publish", "admin")
CACHE_SECONDS = 5.0  # a revoked key stops working within this time on every process
TOUCH_SECONDS = 60.0  # last_used_at is written at most this often per key


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    key_id: str
    name: str
    scopes: frozenset[str]
    topics: frozenset[int] | None  # None: every topic
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def allows(self, scope: str, topic_id: int | None = None) -> bool:
        """Admin implies every scope; a topic-bound key only reaches its topics."""
        if scope not in self.scopes and "admin" not in self.scopes:
            return False
        return topic_id is None or self.topics is None or topic_id in self.topics


# The key from LATAM_BOOTSTRAP_API_KEY: admin, not in the table, revoked by rotating the secret.
BOOTSTRAP_KEY = ApiKey(
    id=0,
    key_id="bootstrap",
    name="LATAM_BOOTSTRAP_API_KEY",
    scopes=frozenset({"admin"}),
    topics=None,
    created_at=datetime(1970, 1, 1, tzinfo=UTC),
    last_used_at=None,
    revoked_at=None,
)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse(token: str) -> tuple[str, str] | None:
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "lt" or not key_id or not secret:
        return None
    return key_id, secret


def _row_to_key(row: object) -> ApiKey:
    topics = getattr(row, "topics", None)
    return ApiKey(
        id=row.id,  # type: ignore[attr-defined]
        key_id=row.key_id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        scopes=frozenset(row.scopes.split(",")),  # type: ignore[attr-defined]
        topics=frozenset(int(t) for t in topics.split(",")) if topics else None,
        created_at=row.created_at,  # type: ignore[attr-defined]
        last_used_at=row.last_used_at,  # type: ignore[attr-defined]
        revoked_at=row.revoked_at,  # type: ignore[attr-defined]
    )


class KeyStore:
    """API keys in the store's database."""

    def __init__(self, engine: Engine, *, bootstrap_key: str | None = None) -> None:
        self.engine = engine
        self._bootstrap = bootstrap_key
        self._cache: dict[str, tuple[float, ApiKey | None, str]] = {}
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def create(
        self, *, name: str, scopes: Sequence[str], topics: Sequence[int] | None = None
    ) -> tuple[ApiKey, str]:
        """A new key and its full token (shown once, never stored)."""
        unknown = set(scopes) - set(SCOPES)
        if not scopes or unknown:
            raise InvalidRequest(f"scopes must be among {', '.join(SCOPES)}", field="scope")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        values = {
            "key_id": key_id,
            "secret_hash": _hash(secret),
            "name": name,
            "scopes": ",".join(sorted(set(scopes))),
            "topics": ",".join(str(t) for t in sorted(set(topics))) if topics else None,
            "created_at": utcnow(),
        }
        with translate_errors(), self.engine.begin() as conn:
            conn.execute(insert(api_keys).values(**values))
        return self.get(key_id), f"lt_{key_id}_{secret}"

    def get(self, key_id: str) -> ApiKey:
        query = select(api_keys).where(api_keys.c.key_id == key_id)
        with translate_errors(), self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"API key {key_id!r} does not exist")
        return _row_to_key(row)

    def list(self) -> list[ApiKey]:
        with translate_errors(), self.engine.connect() as conn:
            return [_row_to_key(r) for r in conn.execute(select(api_keys).order_by("id"))]

    def revoke(self, key_id: str) -> ApiKey:
        stmt = (
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        with translate_errors(), self.engine.begin() as conn:
            conn.execute(stmt)
        return self.get(key_id)

    def verify(self, token: str) -> ApiKey | None:
        """The live key a bearer token belongs to, or None (unknown, wrong, revoked)."""
        if self._bootstrap and hmac.compare_digest(token.encode(), self._bootstrap.encode()):
            return BOOTSTRAP_KEY
        parsed = _parse(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        cached = self._cache.get(key_id)
        now = time.monotonic()
        if cached is None or now - cached[0] > CACHE_SECONDS:
            cached = self._load(key_id, now)
        _, key, secret_hash = cached
        # Compared even for unknown ids so the timing does not tell whether a key exists.
        if not hmac.compare_digest(_hash(secret), secret_hash) or key is None:
            return None
        if key.revoked_at is not None:
            return None
        self._touch(key, now)
        return key

    def _load(self, key_id: str, now: float) -> tuple[float, ApiKey | None, str]:
        query = select(api_keys).where(api_keys.c.key_id == key_id)
        with translate_errors(), self.engine.connect() as conn:
            row = conn.execute(query).first()
        entry = (now, _row_to_key(row), row.secret_hash) if row else (now, None, "0" * 64)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = entry
        return entry

    def _touch(self, key: ApiKey, now: float) -> None:
        if now - self._touched.get(key.id, 0.0) < TOUCH_SECONDS:
            return
        self._touched[key.id] = now
        stmt = update(api_keys).where(api_keys.c.id == key.id).values(last_used_at=utcnow())
        with translate_errors(), self.engine.begin() as conn:
            conn.execute(stmt)


class RateLimiter:
    """A token bucket per caller (key id or client address), in this process."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, caller: str, cost: float = 1.0) -> float:
        """0 when allowed; otherwise the seconds to wait before a retry can succeed."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._buckets[caller] = (tokens - cost, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (cost - tokens) / self.rate
