"""API keys: the model, the key store port, creating keys and verifying bearer tokens.

A key reads ``lt_<key_id>_<secret>``: ``key_id`` (public, 12 hex chars) finds the row,
``secret`` (32 random bytes, 256 bits) is checked against its SHA-256 in constant time.
Only the hash is stored; the full key is shown once, at creation. SHA-256 without a slow
KDF is the right tool here because the secret is random, not a human password.
``SqlKeyStore`` (``storage.keys``) is the adapter of ``KeyStore`` on every SQL database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from latam import metrics
from latam.domain import utcnow
from latam.errors import InvalidRequest

SCOPES = ("read", "publish", "admin")
CACHE_SECONDS = 5.0  # a revoked key stops working within this time on every process
TOUCH_SECONDS = 60.0  # last_used_at is written at most this often per key
MAX_NAME_LENGTH = 200  # the api_keys.name column
NO_HASH = "0" * 64  # compared against for unknown ids, so they take as long as known ones


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


@dataclass(frozen=True, slots=True)
class NewKey:
    """What a key store records for a new key: never the secret, only its hash."""

    key_id: str
    secret_hash: str
    name: str
    scopes: frozenset[str]
    topics: frozenset[int] | None
    created_at: datetime


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


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# What ``create_key`` makes: 12 hex characters of id, 43 URL-safe base64 ones of secret.
TOKEN_FORMAT = re.compile(r"lt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


def _matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def parse_token(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed ``lt_<key_id>_<secret>`` token, or None: a
    token of any other shape was never issued, so it is refused without a lookup."""
    found = TOKEN_FORMAT.fullmatch(token)
    return (found[1], found[2]) if found else None


class KeyStore(Protocol):
    """Where API keys live; every method raises latam errors, never driver ones."""

    def create(self, key: NewKey) -> ApiKey: ...
    def get(self, key_id: str) -> ApiKey:
        """The key, or NotFound."""
        ...

    def list(self) -> list[ApiKey]: ...
    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key (once: a second revocation keeps the first time), or NotFound."""
        ...

    def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and the hash of its secret, or None when there is no such key."""
        ...

    def touch(self, id: int, when: datetime) -> None:
        """Record ``when`` as the key's last use."""
        ...


def create_key(
    store: KeyStore, *, name: str, scopes: Sequence[str], topics: Sequence[int] | None = None
) -> tuple[ApiKey, str]:
    """A new key and its full token (shown once, never stored)."""
    if not scopes or set(scopes) - set(SCOPES):
        raise InvalidRequest(f"scopes must be among {', '.join(SCOPES)}", field="scope")
    if not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be 1 to {MAX_NAME_LENGTH} characters", field="name")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    new = NewKey(
        key_id=key_id,
        secret_hash=hash_secret(secret),
        name=name,
        scopes=frozenset(scopes),
        topics=frozenset(topics) if topics else None,
        created_at=utcnow(),
    )
    return store.create(new), f"lt_{key_id}_{secret}"


# (loaded at, the key or None when unknown, the hash to compare the secret with)
_Entry = tuple[float, ApiKey | None, str]


class _Lru:
    """At most ``size`` entries; the least recently used one goes first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, key_id: str) -> _Entry | None:
        entry = self._entries.get(key_id)
        if entry is not None:
            self._entries.move_to_end(key_id)
        return entry

    def put(self, key_id: str, entry: _Entry) -> None:
        self._entries[key_id] = entry
        self._entries.move_to_end(key_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def pop(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class KeyVerifier:
    """Which live key a bearer token belongs to, through a ``KeyStore``.

    Lookups are cached for ``CACHE_SECONDS``. Keys found and ids not found are cached
    apart, each bounded, so a flood of made-up ids never evicts the keys in use.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        bootstrap_key: str | None = None,
        max_keys: int = 10_000,
        max_unknown: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._bootstrap = bootstrap_key
        self._clock = clock
        self._known = _Lru(max_keys)
        self._unknown = _Lru(max_unknown)
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def verify(self, token: str) -> ApiKey | None:
        """The live key a bearer token belongs to, or None (unknown, wrong, revoked).
        May read the key store: call it off the event loop, or try ``verify_cached``."""
        found = self._verify(token, cached_only=False)
        return None if isinstance(found, str) else found

    def verify_cached(self, token: str) -> ApiKey | Literal["lookup", "refresh"] | None:
        """``verify`` when it needs no I/O (a malformed token, the bootstrap key, a cached
        key or unknown id); else what ``verify`` would do with the key store: ``"refresh"``
        a key it verified before (stale, or its last use due), ``"lookup"`` an id it
        does not know."""
        return self._verify(token, cached_only=True)

    def _verify(
        self, token: str, *, cached_only: bool
    ) -> ApiKey | Literal["lookup", "refresh"] | None:
        if self._bootstrap and hmac.compare_digest(token.encode(), self._bootstrap.encode()):
            return BOOTSTRAP_KEY
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = self._clock()
        cached = self._cached(key_id)
        if cached is None or now - cached[0] > CACHE_SECONDS:
            if cached_only:
                if cached is not None and cached[1] is not None and _matches(secret, cached[2]):
                    return "refresh"
                return "lookup"
            cached = self._load(key_id, now)
        _, key, secret_hash = cached
        # Compared even for unknown ids so the timing does not tell whether a key exists.
        if not _matches(secret, secret_hash) or key is None:
            return None
        if key.revoked_at is not None:
            return None
        if self._touch_due(key, now):
            if cached_only:
                return "refresh"
            self._touch(key, now)
        return key

    def forget(self, key_id: str | None = None) -> None:
        """Drop what is cached about ``key_id`` (every key when None): the next
        verification reads the store, as it does after ``CACHE_SECONDS`` anyway."""
        with self._lock:
            if key_id is None:
                self._known.clear()
                self._unknown.clear()
            else:
                self._known.pop(key_id)
                self._unknown.pop(key_id)

    def cached(self) -> tuple[int, int]:
        """How many keys and unknown ids are cached."""
        with self._lock:
            return len(self._known), len(self._unknown)

    def _cached(self, key_id: str) -> _Entry | None:
        with self._lock:
            return self._known.get(key_id) or self._unknown.get(key_id)

    def _load(self, key_id: str, now: float) -> _Entry:
        found = self.store.find(key_id)
        metrics.API_KEY_LOOKUPS.labels(result="found" if found else "unknown").inc()
        entry: _Entry = (now, *found) if found else (now, None, NO_HASH)
        with self._lock:
            if found:
                self._unknown.pop(key_id)
                self._known.put(key_id, entry)
            else:
                self._known.pop(key_id)
                self._unknown.put(key_id, entry)
        return entry

    def _touch_due(self, key: ApiKey, now: float) -> bool:
        with self._lock:
            last = self._touched.get(key.id)
        return last is None or now - last >= TOUCH_SECONDS

    def _touch(self, key: ApiKey, now: float) -> None:
        with self._lock:
            last = self._touched.get(key.id)
            if last is not None and now - last < TOUCH_SECONDS:
                return
            self._touched[key.id] = now
        self.store.touch(key.id, utcnow())
