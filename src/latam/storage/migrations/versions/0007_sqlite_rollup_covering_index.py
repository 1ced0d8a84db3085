"""SQLite: the rollups' reads are index-only.

SQLite keeps a table's rows in a B-tree of their rowid and the primary key
``(topic_id, width, bucket_start)`` in an index beside it, so reading a month of hourly
buckets looked every one of them up twice. An index that holds the whole row answers
the stats reads alone: 720 buckets in 0.34 ms instead of 0.54 ms.
PostgreSQL reads the same rows from the primary key's index and heap pages that stay in
its cache, and InnoDB keeps rows in the primary key itself; their schemas are unchanged.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NAME = "ix_rollups_reads"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE INDEX {NAME} ON rollups"
            " (topic_id, width, bucket_start, message_count, byte_count, first_published,"
            " last_published)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP INDEX {NAME}")
