"""Field filters give the same rows on every store: SQLite, PostgreSQL, MariaDB and the
in-memory fake, read as the API reads them (``Service.read_page``, the store's own page
reader), page after page, over a fixed data set with numbers and strings that look alike,
nulls and missing fields, nested paths, unicode and two topics sharing message ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from latam.domain import NewMessage
from latam.errors import InvalidQuery
from latam.filters import Filters, parse_filters
from latam.service import Service
from tests.contract.conftest import run_reads

BASE = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
ROWS: list[tuple[dict[str, Any], dict[str, str]]] = [
    (
        {
            "flight": "LA800",
            "delay_min": 15,
            "status": "DELAYED",
            "origin": "SCL",
            "gate": None,
            "crew": {"captain": "Muñoz"},
        },
        {"source": "ops"},
    ),
    (
        {"flight": "LA801", "delay_min": "15", "status": "CANCELLED", "origin": "LIM"},
        {"source": "web"},
    ),
    (
        {
            "flight": "la800",
            "delay_min": 3.5,
            "ok": True,
            "origin": "SCL",
            "crew": {"captain": "Munoz"},
        },
        {},
    ),
    (
        {"flight": "LA900", "delay_min": 20, "ok": False, "gate": "A1", "origin": "GRU"},
        {"source": "ops"},
    ),
    (
        {"flight": "LA800", "delay_min": -2, "status": "ON_TIME", "origin": "SCL"},
        {"source": "crew"},
    ),
    ({"flight": "✈ LA800", "delay_min": 1e2, "origin": "Zürich"}, {}),
    ({"flight": 800, "delay_min": 0}, {}),
    ({"delay_min": None, "crew": "none"}, {}),
    ({"flight": "LA800", "delay_min": 15.0, "status": "DELAYED"}, {"source": "ops"}),
    ({"Flight": "LA800", "delay_min": 150}, {}),
    ({"flight": "LA8000", "delay_min": 7, "tags": ["a", "b"]}, {}),
    ({"flight": "", "delay_min": 9007199254740993}, {}),
]
EVERY = set(range(len(ROWS)))
CASES: list[tuple[list[tuple[str, str]], set[int]]] = [
    ([("data.flight", "eq.LA800")], {0, 4, 8}),
    ([("data.flight", "neq.LA800")], {1, 2, 3, 5, 10, 11}),
    ([("data.flight", "gt.LA800")], {1, 2, 3, 5, 10}),  # code point order: "l" > "L", "✈" > "L"
    ([("data.flight", "lt.LA800")], {11}),
    ([("data.flight", "lte.LA800")], {0, 4, 8, 11}),
    ([("data.flight", "eq.800")], {6}),  # a number matches only numbers
    ([("data.flight", 'eq."800"')], set()),
    ([("data.delay_min", "gte.15")], {0, 3, 5, 8, 9, 11}),
    ([("data.delay_min", "eq.15")], {0, 8}),  # 15 and 15.0, not "15"
    ([("data.delay_min", 'eq."15"')], {1}),
    ([("data.delay_min", "lt.0")], {4}),
    ([("data.delay_min", "gt.1000")], {11}),
    ([("data.delay_min", "lte.3.5")], {2, 4, 6}),
    ([("data.delay_min", 'in.(0,7,"15")')], {1, 6, 10}),
    ([("data.delay_min", "is.null")], {7}),
    ([("data.status", "in.(DELAYED,CANCELLED)")], {0, 1, 8}),
    ([("data.gate", "is.null")], EVERY - {3}),  # null or missing
    ([("data.ok", "is.true")], {2}),
    ([("data.ok", "is.false")], {3}),
    ([("data.crew.captain", "eq.Muñoz")], {0}),
    ([("data.crew.captain", "is.null")], EVERY - {0, 2}),  # "crew" a string: no captain
    ([("data.origin", "eq.Zürich")], {5}),
    ([("data.Flight", "eq.LA800")], {9}),  # keys are case-sensitive
    ([("data.tags", "eq.a")], set()),  # arrays and objects match no comparison
    ([("attributes.source", "eq.ops")], {0, 3, 8}),
    ([("attributes.source", "neq.ops")], {1, 4}),
    ([("attributes.source", "is.null")], {2, 5, 6, 7, 9, 10, 11}),
    ([("attributes.source", "in.(web,crew)")], {1, 4}),
    ([("data.flight", "eq.LA800"), ("attributes.source", "eq.ops")], {0, 8}),
    ([("data.flight", "eq.LA800"), ("data.delay_min", "lt.0")], {4}),
]


def load(service: Service) -> int:
    """The data set in topic "flights", and the same ids in topic "other" (all of them
    would match ``data.flight=eq.LA800`` there). Message ``n`` is published at
    ``BASE + n`` minutes."""
    flights = service.store.create_topic("flights").id
    other = service.store.create_topic("other").id
    batch = []
    for n, (data, attributes) in enumerate(ROWS):
        published = BASE + timedelta(minutes=n)
        batch.append(
            (
                flights,
                NewMessage("flights", f"m{n}", orjson.dumps(data).decode(), attributes, published),
            )
        )
        batch.append(
            (
                other,
                NewMessage("other", f"m{n}", '{"flight":"LA800"}', {"source": "ops"}, published),
            )
        )
    service.store.write_messages(batch)
    return flights


def walk(
    service: Service, topic_id: int, filters: Filters, *, limit: int, **window: Any
) -> list[int]:
    """Every page of the filtered read, followed by its cursors; the message numbers."""

    async def pages() -> list[int]:
        seen: list[int] = []
        cursor = None
        for _ in range(len(ROWS) + 2):
            body = orjson.loads(
                await service.read_page(
                    topic_id=topic_id, limit=limit, cursor=cursor, filters=filters, **window
                )
            )
            seen += [int(row["id"][1:]) for row in body["data"]]
            cursor = body["next_cursor"]
            if cursor is None:
                return seen
        raise AssertionError("the pages did not end")

    return run_reads(service, pages())


def test_every_store_filters_alike(service: Service) -> None:
    topic = load(service)
    for params, expected in CASES:
        filters = parse_filters(params, reserved=())
        for limit in (1, 100):
            seen = walk(service, topic, filters, limit=limit)
            assert seen == sorted(expected), (params, limit)  # ingest order, once each


def test_filters_combine_with_a_time_window(service: Service) -> None:
    topic = load(service)
    filters = parse_filters([("data.flight", "eq.LA800")], reserved=())
    window = {"since": BASE + timedelta(minutes=3), "until": BASE + timedelta(minutes=9)}
    assert walk(service, topic, filters, limit=1, **window) == [4, 8]
    assert walk(service, topic, filters, limit=10, since=BASE + timedelta(minutes=1)) == [4, 8]


def test_a_cursor_continues_only_the_same_filters(service: Service) -> None:
    topic = load(service)
    one = parse_filters([("data.flight", "eq.LA800")], reserved=())
    other = parse_filters([("data.flight", "eq.LA801")], reserved=())

    def first_cursor(filters: Filters) -> str:
        page = run_reads(service, service.read_page(topic_id=topic, limit=1, filters=filters))
        return str(orjson.loads(page)["next_cursor"])

    filtered = first_cursor(one)
    plain = first_cursor(Filters())
    for cursor, filters in ((filtered, other), (filtered, Filters()), (plain, one)):
        with pytest.raises(InvalidQuery, match="other filters"):
            run_reads(
                service, service.read_page(topic_id=topic, limit=1, cursor=cursor, filters=filters)
            )
    # The same filters, written in another order of parameters, are other filters only
    # when they differ: the same list continues.
    again = orjson.loads(
        run_reads(service, service.read_page(topic_id=topic, limit=5, cursor=filtered, filters=one))
    )
    assert [row["id"] for row in again["data"]] == ["m4", "m8"]


def test_the_tail_cursor_of_a_filtered_page_follows_only_new_matches(service: Service) -> None:
    topic = load(service)
    filters = parse_filters([("data.status", "eq.DELAYED")], reserved=())
    tail = service.tail_cursor(topic_id=topic, filters=filters)
    service.store.write_messages(
        [
            (topic, NewMessage("flights", "late-1", '{"status":"DELAYED"}', {}, BASE)),
            (topic, NewMessage("flights", "late-2", '{"status":"ON_TIME"}', {}, BASE)),
        ]
    )

    body = run_reads(
        service, service.read_page(topic_id=topic, limit=10, cursor=tail, filters=filters)
    )
    assert [row["id"] for row in orjson.loads(body)["data"]] == ["late-1"]


def test_a_nul_in_a_message_and_integers_past_64_bits(service: Service) -> None:
    """PostgreSQL's json operators failed on a document holding ``\\u0000`` anywhere (so
    one such message made every filtered read of its topic a 503), and an integer past
    64 bits was compared there as the double nearest to it."""
    topic = service.store.create_topic("edges").id
    texts = [
        '{"flight":"LA1","note":"a\\u0000b"}',
        '{"flight":"LA2","big":18446744073709551616}',
        '{"flight":"LA3","big":36893488147419103232,"note":"a\\\\u0000b"}',
    ]
    service.store.write_messages(
        [(topic, NewMessage("edges", f"m{n}", text)) for n, text in enumerate(texts)]
    )
    cases = [
        ([("data.flight", "eq.LA1")], [0]),
        ([("data.note", "eq.a\\u0000b")], [2]),  # a backslash, then "u0000"
        ([("data.big", "eq.18446744073709551616")], [1]),
        ([("data.big", "gte.18446744073709551616")], [1, 2]),
    ]
    for params, expected in cases:
        assert walk(service, topic, parse_filters(params, reserved=()), limit=2) == expected


@pytest.mark.parametrize("value", ['eq."a\\u0000"', "eq.a\x00", 'in.(x,"\\u0000")'])
def test_a_value_holding_nul_is_refused(value: str) -> None:
    with pytest.raises(InvalidQuery, match="U\\+0000"):
        parse_filters([("data.note", value)], reserved=())


def test_the_key_of_an_integer_past_64_bits() -> None:
    one = parse_filters([("data.big", "eq.18446744073709551616")], reserved=())
    other = parse_filters([("data.big", 'eq."18446744073709551616"')], reserved=())
    assert one.items[0].value == 2**64
    assert one.key
    assert one.key != other.key


def test_the_store_pages_filter_a_time_window_after_a_cursor(service: Service) -> None:
    """``Store.page_messages`` (exports, the compatibility read) filters as the page
    reader does in a time window, page after page: on SQLite a page after a cursor there
    is a union of two reads, and filters put outside it joined the table to it."""
    topic = load(service)
    window = {"since": BASE, "until": BASE + timedelta(minutes=len(ROWS))}
    for params, expected in CASES:
        filters = parse_filters(params, reserved=())
        seen: list[int] = []
        cursor = None
        for _ in range(len(ROWS) + 2):
            page = service.read_messages(
                topic_id=topic, limit=1, cursor=cursor, filters=filters, **window
            )
            seen += [int(m.message_id[1:]) for m in page.items]
            if (cursor := page.next_cursor) is None:
                break
        assert seen == sorted(expected), params  # publish-time order is ingest order here
