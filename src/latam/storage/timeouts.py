"""The statement timeout of expensive reads (filtered pages, aggregations, exports):
``LATAM_QUERY_TIMEOUT_SECONDS`` on every store, so that no request can keep the database
busy for longer.

Each database stops the statement itself: PostgreSQL ``statement_timeout``, MariaDB
``max_statement_time``, MySQL ``max_execution_time`` (SELECTs only, which is all this
bounds), SQLite a progress handler that interrupts it. A read stopped so raises
``QueryTooExpensive`` (a 422 that tells the client to narrow it), not StoreUnavailable.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from latam.errors import QueryTooExpensive
from latam.storage.dialects import MYSQL_NAMES

# How many SQLite virtual-machine steps run between two looks at the clock.
SQLITE_STEPS = 10_000
# Driver error codes of a statement stopped by its timeout.
MYSQL_TIMEOUTS = {1969, 3024}  # MariaDB max_statement_time, MySQL max_execution_time
PG_CANCELED = "57014"


def too_expensive(seconds: float) -> QueryTooExpensive:
    return QueryTooExpensive(
        f"the query ran longer than LATAM_QUERY_TIMEOUT_SECONDS ({seconds:g} s) and was"
        " stopped: narrow since/until, add filters, or index the field (latam index create)"
    )


def is_timeout(exc: BaseException) -> bool:
    """Whether a driver error is a statement stopped by its timeout."""
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, sqlite3.OperationalError):
        return "interrupted" in str(orig)
    if getattr(orig, "sqlstate", None) == PG_CANCELED:
        return True
    code = getattr(orig, "args", (None,))[0] if getattr(orig, "args", None) else None
    if isinstance(code, dict):  # pg8000 carries the SQLSTATE in a dict
        return code.get("C") == PG_CANCELED
    return code in MYSQL_TIMEOUTS


@contextmanager
def statement_timeout(conn: Connection, seconds: float) -> Iterator[None]:
    """Statements run in the block on ``conn`` are stopped after ``seconds`` each."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        raw: Any = conn.connection.dbapi_connection
        with sqlite_deadline(raw, seconds):
            yield
        return
    millis = max(1, int(seconds * 1000))
    if dialect == "postgresql":
        setting, reset = f"SET statement_timeout = {millis}", "SET statement_timeout = 0"
    elif getattr(conn.dialect, "is_mariadb", False) or dialect == "mariadb":
        setting = f"SET SESSION max_statement_time = {millis / 1000:.3f}"
        reset = "SET SESSION max_statement_time = 0"
    elif dialect in MYSQL_NAMES:
        setting = f"SET SESSION max_execution_time = {millis}"
        reset = "SET SESSION max_execution_time = 0"
    else:  # pragma: no cover - every supported dialect is above
        yield
        return
    conn.exec_driver_sql(setting)
    failed = True
    try:
        yield
        failed = False
    except DBAPIError as exc:
        if is_timeout(exc):
            raise too_expensive(seconds) from exc
        raise
    finally:
        if not conn.invalidated and not conn.closed:
            if failed and dialect == "postgresql" and conn.in_transaction():
                # The error aborted the transaction (which took the SET with it): the
                # reset would fail there and hide the error.
                conn.rollback()
            conn.exec_driver_sql(reset)


@contextmanager
def sqlite_deadline(conn: sqlite3.Connection, seconds: float) -> Iterator[None]:
    """Statements run in the block on a raw SQLite connection are interrupted after
    ``seconds`` (QueryTooExpensive)."""
    deadline = time.monotonic() + seconds

    def expired() -> int:
        return 1 if time.monotonic() > deadline else 0

    conn.set_progress_handler(expired, SQLITE_STEPS)
    try:
        yield
    except sqlite3.OperationalError as exc:
        if is_timeout(exc):
            raise too_expensive(seconds) from exc
        raise
    except DBAPIError as exc:
        if is_timeout(exc):
            raise too_expensive(seconds) from exc
        raise
    finally:
        conn.set_progress_handler(None, 0)
