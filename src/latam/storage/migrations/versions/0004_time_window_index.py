"""Time-window reads in one index range at any position in the topic.

A page with ``since``/``until`` now walks ``(published_at, seq)`` (``domain.Position``).
The index on ``(topic_id, published_at)`` served the filter but not that order, so the
database either walked the topic in ``seq`` order filtering on time, or sorted the whole
window; ``(topic_id, published_at, seq)`` serves both and replaces it (its prefix still
serves the stats queries).

On a large table the index build takes a while and, on MySQL and SQLite, blocks writes
while it runs (PostgreSQL: a ``SHARE`` lock); run ``latam migrate`` before the new version
starts serving, as for every migration (docs/stores.md, "Switching stores").

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NEW = "ix_messages_topic_id_published_at_seq"
OLD = "ix_messages_topic_id_published_at"


def upgrade() -> None:
    op.create_index(NEW, "messages", ["topic_id", "published_at", "seq"])
    op.drop_index(OLD, table_name="messages")


def downgrade() -> None:
    op.create_index(OLD, "messages", ["topic_id", "published_at"])
    op.drop_index(NEW, table_name="messages")
