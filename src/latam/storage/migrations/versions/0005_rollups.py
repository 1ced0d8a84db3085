"""Rollups: per topic and per minute, hour and day of publish time, the count, the bytes
and the first/last publish time of the stored rows (``storage/rollups.py``).

The tables are created here, with the build marker: rows stored before this revision
(up to the last ``seq`` now) are added to the rollups afterwards, in batches, by the
worker while the service runs, and the stats read the rows until that is done. Stop the
old workers before migrating (as ``latam serve`` does, and as docs/stores.md asks for
every release): a row an old worker stores after this point would not be counted, which
``latam rollups verify`` would report.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from latam.storage.schema import BigId

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "rollups",
        sa.Column("topic_id", BigId, primary_key=True, autoincrement=False),
        sa.Column("width", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("bucket_start", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("message_count", sa.BigInteger, nullable=False),
        sa.Column("byte_count", sa.BigInteger, nullable=False),
        sa.Column("first_published", sa.BigInteger, nullable=False),
        sa.Column("last_published", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(
            ["topic_id"],
            ["topics.id"],
            name="fk_rollups_topic_id_topics",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("topic_id", "width", "bucket_start", name="pk_rollups"),
        **OPTIONS,
    )
    build = op.create_table(
        "rollup_build",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("horizon_seq", sa.BigInteger, nullable=False),
        sa.Column("built_to_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollup_build"),
        **OPTIONS,
    )
    horizon = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM messages"))
    op.bulk_insert(build, [{"id": 1, "horizon_seq": horizon.scalar_one(), "built_to_seq": 0}])


def downgrade() -> None:
    op.drop_table("rollup_build")
    op.drop_table("rollups")
