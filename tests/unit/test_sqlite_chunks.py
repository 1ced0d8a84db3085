"""The SQLite batch insert's statement shapes: every row once, in order, few shapes."""

from __future__ import annotations

from latam.storage.bulk_insert import SQLITE_ROWS, sqlite_chunks


def test_every_batch_size_is_cut_into_few_statement_shapes() -> None:
    shapes: set[int] = set()
    for total in range(0, 3 * SQLITE_ROWS + 1):
        chunks = list(sqlite_chunks(total))
        assert sum(chunks) == total
        assert all(0 < rows <= SQLITE_ROWS for rows in chunks)
        assert len(chunks) <= total // SQLITE_ROWS + 9
        shapes.update(chunks)
    # The sqlite3 module keeps each prepared shape: ten, not one per row count.
    assert shapes == {SQLITE_ROWS, 256, 128, 64, 32, 16, 8, 4, 2, 1}
