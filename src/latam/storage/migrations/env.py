"""Alembic environment: runs migrations on the connection ``latam migrate`` hands over."""

from __future__ import annotations

from alembic import context

from latam.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - latam always passes a connection
    raise RuntimeError("run migrations through `latam migrate`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
