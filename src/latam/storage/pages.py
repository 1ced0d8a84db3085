"""Pages of messages rendered as JSON by SQLite itself.

Reading a page row by row from Python costs a GIL hand-off per row (the sqlite3 module
releases the GIL around every step), and with a thread per request those hand-offs
convoy: 16 concurrent readers served fewer pages than one. Here SQLite builds the page's
JSON array in one statement, so a page is one step, and Python only splices the text
into the response. The shape is exactly the one ``api.render.message_json`` produces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, text

from latam.storage.dialects import translate_errors
from latam.storage.schema import UTCDateTime

ROW_JSON = (
    "json_object('id', message_id, 'data', json(data), 'attributes', json(attributes),"
    " 'published_at', replace(published_at, ' ', 'T') || 'Z',"
    " 'ingested_at', replace(ingested_at, ' ', 'T') || 'Z')"
)


def _statement(since: bool, until: bool) -> Any:
    filters = "".join(
        [
            " AND published_at >= :since" if since else "",
            " AND published_at < :until" if until else "",
        ]
    )
    # Only constant fragments are formatted in; every value is a bound parameter.
    sql = (
        "WITH page AS MATERIALIZED (SELECT seq, message_id, data, attributes, published_at,"  # noqa: S608  # nosec B608
        " ingested_at FROM messages WHERE topic_id = :topic AND seq > :after"
        f"{filters} ORDER BY seq LIMIT :probe),"
        " shown AS MATERIALIZED (SELECT * FROM page ORDER BY seq LIMIT :limit)"
        f" SELECT (SELECT json_group_array({ROW_JSON}) FROM (SELECT * FROM shown ORDER BY seq)),"
        " (SELECT count(*) FROM page), (SELECT max(seq) FROM shown)"
    )
    params = [
        bindparam(name, type_=UTCDateTime())
        for name, on in (("since", since), ("until", until))
        if on
    ]
    return text(sql).bindparams(*params)


def sqlite_page(
    engine: Engine,
    topic_id: int,
    *,
    limit: int,
    after_seq: int,
    since: datetime | None,
    until: datetime | None,
) -> tuple[str, int | None]:
    """The page as a JSON array, and the last seq shown when another page follows."""
    values: dict[str, Any] = {
        "topic": topic_id,
        "after": after_seq,
        "probe": limit + 1,
        "limit": limit,
    }
    if since is not None:
        values["since"] = since
    if until is not None:
        values["until"] = until
    with translate_errors(), engine.connect() as conn:
        array, count, last = conn.execute(
            _statement(since is not None, until is not None), values
        ).one()
    return array, (last if count > limit else None)
