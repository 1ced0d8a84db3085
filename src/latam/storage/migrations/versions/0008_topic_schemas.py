"""Data contracts: JSON Schemas per topic, by version, the version each message met, and
the topic's retention.

``topic_schemas`` keeps every version a topic has had; ``topics.schema_version`` names the
one enforced (null: none), ``messages.schema_version`` the one a message was validated
against; ``topics.retention_seconds`` how long its messages are kept (null: forever). The
new columns are nullable and without a default, so adding them changes no stored row:
instant on PostgreSQL, MySQL 8, MariaDB 10.3+ and SQLite, at any table size.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from latam.storage.schema import BigId, JsonText, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topic_schemas",
        sa.Column("topic_id", BigId, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("schema", JsonText, nullable=False),
        sa.Column("compatibility", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["topic_id"],
            ["topics.id"],
            name="fk_topic_schemas_topic_id_topics",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("topic_id", "version", name="pk_topic_schemas"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.add_column("topics", sa.Column("schema_version", sa.Integer, nullable=True))
    op.add_column("topics", sa.Column("retention_seconds", sa.BigInteger, nullable=True))
    op.add_column("messages", sa.Column("schema_version", sa.Integer, nullable=True))


def downgrade() -> None:
    # In place on every store (SQLite since 3.35): a batch rebuild of ``topics`` on SQLite
    # would drop the old table and, by its foreign keys' cascade, every message.
    op.drop_column("messages", "schema_version")
    op.drop_column("topics", "retention_seconds")
    op.drop_column("topics", "schema_version")
    op.drop_table("topic_schemas")
