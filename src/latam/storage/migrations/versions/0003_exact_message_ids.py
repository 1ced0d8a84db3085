"""Message ids compare exactly on MySQL/MariaDB.

``utf8mb4_bin`` is a PAD SPACE collation: ``'LA800'`` and ``'LA800 '`` compare equal, so
the second was taken for a duplicate of the first (or matched the wrong row). The
NO PAD binary collation of each server compares every byte, as PostgreSQL and SQLite do.
Other stores: nothing to do.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMN = "message_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE {} NOT NULL"


def _collation() -> str | None:
    """The NO PAD binary collation of this server, or None where none is needed."""
    bind = op.get_bind()
    if bind.dialect.name not in {"mysql", "mariadb"}:
        return None
    if getattr(bind.dialect, "is_mariadb", False):
        return "utf8mb4_nopad_bin"  # MariaDB 10.2 and later
    return "utf8mb4_0900_bin"  # MySQL 8.0 and later


def upgrade() -> None:
    if (collation := _collation()) is not None:
        op.execute(f"ALTER TABLE messages MODIFY {COLUMN.format(collation)}")


def downgrade() -> None:
    if _collation() is not None:
        op.execute(f"ALTER TABLE messages MODIFY {COLUMN.format('utf8mb4_bin')}")
