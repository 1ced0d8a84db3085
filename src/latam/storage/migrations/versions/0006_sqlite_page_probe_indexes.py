"""SQLite: the page indexes carry each row's size, so a page's probe never reads a row.

A page is cut at a byte budget (``LATAM_MAX_PAGE_BYTES``) by a running sum over its
probe's ``size_bytes + length(attributes)``. SQLite keeps those columns after ``data`` in
the row, so reading them for a row of large messages walks its overflow pages: 70 ms for
a probe of 1,001 rows of 250 KB. As the last column of the two page indexes, the same
expression makes the probe an index-only scan (0.6 ms). PostgreSQL keeps large values
out of line (TOAST) and InnoDB off-page, so their probes read no ``data`` already; their
indexes are unchanged.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ROW_BYTES = "(size_bytes + length(attributes))"
# name: (its columns before the size, the index it replaces)
INDEXES = {
    "ix_messages_topic_id_seq_bytes": ("topic_id, seq", "ix_messages_topic_id_seq"),
    "ix_messages_topic_id_published_at_seq_bytes": (
        "topic_id, published_at, seq",
        "ix_messages_topic_id_published_at_seq",
    ),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, (columns, old) in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON messages ({columns}, {ROW_BYTES})")
        op.execute(f"DROP INDEX {old}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, (columns, old) in INDEXES.items():
        op.execute(f"CREATE INDEX {old} ON messages ({columns})")
        op.execute(f"DROP INDEX {name}")
