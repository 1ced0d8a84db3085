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
    with op.batch_alter_table("topics") as batch:
        batch.drop_column("stats_version")
