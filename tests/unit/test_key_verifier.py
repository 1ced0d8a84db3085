"""KeyVerifier over an in-memory KeyStore: caching, its bounds, revocation, last use."""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import replace
from datetime import datetime

import pytest

from latam.domain import utcnow
from latam.errors import InvalidRequest, NotFound
from latam.keys import (
    BOOTSTRAP_KEY,
    CACHE_SECONDS,
    TOUCH_SECONDS,
    ApiKey,
    KeyVerifier,
    NewKey,
    create_key,
    hash_secret,
    parse_token,
)


class MemoryKeys:
    """The KeyStore port in a dict, counting the lookups a verifier makes."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[ApiKey, str]] = {}
        self.finds: Counter[str] = Counter()
        self.touches: list[tuple[int, datetime]] = []

    def create(self, key: NewKey) -> ApiKey:
        made = ApiKey(
            id=len(self.rows) + 1,
            key_id=key.key_id,
            name=key.name,
            scopes=key.scopes,
            topics=key.topics,
            created_at=key.created_at,
            last_used_at=None,
            revoked_at=None,
        )
        self.rows[key.key_id] = (made, key.secret_hash)
        return made

    def get(self, key_id: str) -> ApiKey:
        if key_id not in self.rows:
            raise NotFound(key_id)
        return self.rows[key_id][0]

    def list(self) -> list[ApiKey]:
        return [key for key, _ in self.rows.values()]

    def revoke(self, key_id: str) -> ApiKey:
        key, secret_hash = self.rows[key_id]
        self.rows[key_id] = (replace(key, revoked_at=utcnow()), secret_hash)
        return self.rows[key_id][0]

    def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        self.finds[key_id] += 1
        return self.rows.get(key_id)

    def touch(self, id: int, when: datetime) -> None:
        self.touches.append((id, when))


SECRET = "s" * 43


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> MemoryKeys:
    return MemoryKeys()


def test_tokens_verify_only_with_their_secret(store: MemoryKeys) -> None:
    key, token = create_key(store, name="reader", scopes=["read"], topics=[3, 1])
    assert key.topics == frozenset({1, 3})
    key_id, secret = parse_token(token) or ("", "")
    assert (key_id, store.rows[key_id][1]) == (key.key_id, hash_secret(secret))
    verifier = KeyVerifier(store)
    assert verifier.verify(token) == key
    for wrong in (f"lt_{key_id}_x", "lt_000000000000_x", "lt__x", "nonsense", "", token + "x"):
        assert verifier.verify(wrong) is None


def test_create_key_validates(store: MemoryKeys) -> None:
    with pytest.raises(InvalidRequest, match="scopes"):
        create_key(store, name="x", scopes=[])
    with pytest.raises(InvalidRequest, match="scopes"):
        create_key(store, name="x", scopes=["read", "root"])
    with pytest.raises(InvalidRequest, match="name"):
        create_key(store, name="x" * 201, scopes=["read"])
    assert store.rows == {}


def test_valid_keys_survive_a_flood_of_unknown_ids(store: MemoryKeys) -> None:
    tokens = [create_key(store, name=f"k{i}", scopes=["read"])[1] for i in range(20)]
    verifier = KeyVerifier(store, max_keys=100, max_unknown=50)
    assert all(verifier.verify(token) for token in tokens)
    for _ in range(5_000):
        assert verifier.verify(f"lt_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}") is None
    assert verifier.cached() == (20, 50)
    assert all(verifier.verify(token) for token in tokens)
    assert {store.finds[key_id] for key_id in store.rows} == {1}, "keys were read again"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "nonsense",
        "lt_",
        f"lt_{'a' * 12}_short",
        f"lt_{'A' * 12}_{'s' * 43}",  # the id is lower-case hex
        f"lt_{'a' * 11}_{'s' * 44}",
        f"lt_{'a' * 12}_{'s' * 42}!",
        f"xx_{'a' * 12}_{'s' * 43}",
        f"lt_{'a' * 12}_{'s' * 43}\n",
        "lt_" + "a" * 10_000,
    ],
)
def test_a_malformed_token_is_refused_without_a_lookup(store: MemoryKeys, token: str) -> None:
    verifier = KeyVerifier(store)
    assert verifier.verify_cached(token) is None
    assert verifier.verify(token) is None
    assert not store.finds
    assert verifier.cached() == (0, 0)


def test_verify_cached_asks_for_a_lookup_only_when_it_needs_the_store(store: MemoryKeys) -> None:
    clock = Clock()
    key, token = create_key(store, name="reader", scopes=["read"])
    unknown = f"lt_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    verifier = KeyVerifier(store, clock=clock)
    assert verifier.verify_cached(token) == "lookup"
    assert verifier.verify_cached(unknown) == "lookup"
    assert not store.finds
    assert verifier.verify(token) == key
    assert verifier.verify(unknown) is None
    assert verifier.verify_cached(token) == key
    assert verifier.verify_cached(unknown) is None
    assert verifier.verify_cached(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    clock.now += TOUCH_SECONDS + 1  # last use is due, and the cache entry is stale
    assert verifier.verify_cached(token) == "refresh"
    assert verifier.verify_cached(token[:-1] + ("A" if token[-1] != "A" else "B")) == "lookup"
    assert verifier.verify_cached(unknown) == "lookup"
    assert sum(store.finds.values()) == 2


def test_the_key_cache_drops_the_least_recently_used(store: MemoryKeys) -> None:
    tokens = [create_key(store, name=f"k{i}", scopes=["read"])[1] for i in range(3)]
    first, second = (parse_token(token) or ("", "") for token in tokens[:2])
    verifier = KeyVerifier(store, max_keys=2)
    for token in (tokens[0], tokens[1], tokens[0], tokens[2]):
        assert verifier.verify(token) is not None
    assert verifier.cached() == (2, 0)
    assert verifier.verify(tokens[0]) is not None
    assert store.finds[first[0]] == 1  # used most recently before the third key came
    assert verifier.verify(tokens[1]) is not None
    assert store.finds[second[0]] == 2  # evicted, read again


def test_revocation_shows_after_the_cache_time(store: MemoryKeys) -> None:
    clock = Clock()
    key, token = create_key(store, name="temp", scopes=["read"])
    verifier = KeyVerifier(store, clock=clock)
    assert verifier.verify(token) == key
    store.revoke(key.key_id)
    assert verifier.verify(token) == key  # cached
    clock.now += CACHE_SECONDS + 0.1
    assert verifier.verify(token) is None


def test_an_id_unknown_then_created_is_found_after_the_cache_time(store: MemoryKeys) -> None:
    clock = Clock()
    verifier = KeyVerifier(store, clock=clock)
    assert verifier.verify(f"lt_aaaaaaaaaaaa_{SECRET}") is None
    store.create(
        NewKey(
            key_id="aaaaaaaaaaaa",
            secret_hash=hash_secret(SECRET),
            name="late",
            scopes=frozenset({"read"}),
            topics=None,
            created_at=utcnow(),
        )
    )
    assert verifier.verify(f"lt_aaaaaaaaaaaa_{SECRET}") is None
    clock.now += CACHE_SECONDS + 0.1
    assert verifier.verify(f"lt_aaaaaaaaaaaa_{SECRET}") is not None
    assert verifier.cached() == (1, 0)


def test_last_use_is_written_at_most_once_a_minute(store: MemoryKeys) -> None:
    clock = Clock()
    key, token = create_key(store, name="busy", scopes=["read"])
    verifier = KeyVerifier(store, clock=clock)
    for _ in range(3):
        verifier.verify(token)
    assert [id for id, _ in store.touches] == [key.id]
    clock.now += TOUCH_SECONDS
    verifier.verify(token)
    assert len(store.touches) == 2


def test_the_bootstrap_key(store: MemoryKeys) -> None:
    verifier = KeyVerifier(store, bootstrap_key="b" * 40)
    assert verifier.verify("b" * 40) is BOOTSTRAP_KEY
    assert verifier.verify("b" * 39) is None
    assert KeyVerifier(store).verify("b" * 40) is None
    assert not store.touches
