"""``topics.stats_version``: a counter that every transaction changing a topic's rollups
(or its name) raises, so the API can reuse a stats answer until it moves.

A constant default on a new column is a metadata change on PostgreSQL 11+, MySQL 8 and
MariaDB 10.3+ (instant ADD COLUMN) and on SQLite; ``topics`` holds a row per topic anyway.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "topics",
        sa.Column("stats_version", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN on every store (SQLite since 3.35, which latam needs):
    # a batch rebuild of ``topics`` on SQLite would drop the old table, and with it, by
    # its foreign keys' cascade, every message and rollup.
    op.drop_column("topics", "stats_version")
