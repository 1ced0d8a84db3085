"""Topics and messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from latam.storage.schema import TABLE_OPTIONS, BigId, JsonText, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topics",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_topics_name"),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "messages",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "topic_id",
            BigId,
            sa.ForeignKey("topics.id", ondelete="CASCADE", name="fk_messages_topic_id_topics"),
            nullable=False,
        ),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("data", JsonText, nullable=False),
        sa.Column("attributes", JsonText, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
        sa.Column("ingested_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("topic_id", "message_id", name="uq_messages_topic_id_message_id"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_messages_topic_id_seq", "messages", ["topic_id", "seq"])
    op.create_index("ix_messages_topic_id_published_at", "messages", ["topic_id", "published_at"])


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("topics")
