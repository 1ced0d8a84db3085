"""The key store's SQL adapter (the ``api_keys`` table); the port is ``keys.KeyStore``."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update

from latam.domain import utcnow
from latam.errors import NotFound
from latam.keys import ApiKey, NewKey
from latam.storage.dialects import translate_errors
from latam.storage.migrate import schema_problem
from latam.storage.schema import api_keys

KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.key_id,
    api_keys.c.name,
    api_keys.c.scopes,
    api_keys.c.topics,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.revoked_at,
)


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        key_id=row.key_id,
        name=row.name,
        scopes=frozenset(row.scopes.split(",")),
        topics=frozenset(int(t) for t in row.topics.split(",")) if row.topics else None,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class SqlKeyStore:
    """API keys in the store's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _errors(self, *, conflict: str | None = None) -> AbstractContextManager[None]:
        """Driver errors as latam's; a missing table says which revision the schema is at."""
        return translate_errors(conflict=conflict, schema=lambda: schema_problem(self.engine))

    def create(self, key: NewKey) -> ApiKey:
        values = {
            "key_id": key.key_id,
            "secret_hash": key.secret_hash,
            "name": key.name,
            "scopes": ",".join(sorted(key.scopes)),
            "topics": ",".join(str(t) for t in sorted(key.topics)) if key.topics else None,
            "created_at": key.created_at,
        }
        conflict = self._errors(conflict=f"API key {key.key_id!r} already exists")
        with conflict, self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**values))
        return self.get(key.key_id)

    def get(self, key_id: str) -> ApiKey:
        found = self.find(key_id)
        if found is None:
            raise NotFound(f"API key {key_id!r} does not exist")
        return found[0]

    def list(self) -> list[ApiKey]:
        query = select(*KEY_COLUMNS).order_by(api_keys.c.id)
        with self._errors(), self.engine.connect() as conn:
            return [_key(row) for row in conn.execute(query)]

    def revoke(self, key_id: str) -> ApiKey:
        stmt = (
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        with self._errors(), self.engine.begin() as conn:
            conn.execute(stmt)
        return self.get(key_id)

    def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        query = select(*KEY_COLUMNS, api_keys.c.secret_hash).where(api_keys.c.key_id == key_id)
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (_key(row), row.secret_hash)

    def touch(self, id: int, when: datetime) -> None:
        stmt = update(api_keys).where(api_keys.c.id == id).values(last_used_at=when)
        with self._errors(), self.engine.begin() as conn:
            conn.execute(stmt)
