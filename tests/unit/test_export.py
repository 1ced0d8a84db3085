"""Export writers and the batch walk: CSV quoting, unicode, nested values, NDJSON as reads
render it, Parquet types read back with pyarrow, and content negotiation."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.exceptions import HTTPException

from latam.api.export import disposition
from latam.api.negotiation import negotiate
from latam.domain import NewMessage
from latam.errors import InvalidQuery
from latam.export import Export, ExportRange, chunks, make_writer, parse_format
from latam.export import parquet as parquet_module
from latam.export.fields import DEFAULT_FIELDS, MAX_FIELDS, parse_fields
from latam.export.parquet import ParquetWriter
from latam.export.writers import CsvWriter, NdjsonWriter
from latam.filters import parse_filters
from latam.storage.port import StoredMessage, message_json
from tests.fakes import MemoryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def stored(
    seq: int, data: Any, attributes: Any = None, version: int | None = None
) -> StoredMessage:
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    attrs = orjson.dumps(attributes or {}).decode()
    return StoredMessage(seq, f"m{seq}", text, attrs, T0, T0 + timedelta(seconds=1), version)


def csv_rows(data: bytes) -> list[list[str]]:
    assert b"\r\n" in data  # RFC 4180 line ends
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def test_fields_default_and_paths() -> None:
    assert [c.name for c in parse_fields(None)] == list(DEFAULT_FIELDS)
    columns = parse_fields("message_id, data.route.origin,attributes.source,schema_version")
    assert [c.name for c in columns] == [
        "message_id",
        "data.route.origin",
        "attributes.source",
        "schema_version",
    ]
    assert columns[1].path is not None
    assert columns[1].path.keys == ("route", "origin")


@pytest.mark.parametrize(
    "text",
    ["", "data.a,,data.b", "data.a,data.a", "flight", "data..x", "attributes.a.b", "other.x"],
)
def test_bad_fields_are_400_naming_fields(text: str) -> None:
    with pytest.raises(InvalidQuery) as caught:
        parse_fields(text)
    assert caught.value.field == "fields"


def test_too_many_fields() -> None:
    parse_fields(",".join(f"data.f{i}" for i in range(MAX_FIELDS)))
    with pytest.raises(InvalidQuery, match=f"at most {MAX_FIELDS}"):
        parse_fields(",".join(f"data.f{i}" for i in range(MAX_FIELDS + 1)))


def test_csv_quotes_unicode_and_nested_values() -> None:
    writer = CsvWriter(parse_fields("message_id,data.note,data.route,data.n,data.ok,data.gone"))
    message = stored(
        1, {"note": 'coma, "comillas"\nnueva línea São Paulo 🛫', "route": {"o": "SCL"}, "n": 1.5}
    )
    body = writer.write([message, stored(2, {"ok": True, "n": None})]) + writer.close()
    rows = csv_rows(body)
    assert rows[0] == ["message_id", "data.note", "data.route", "data.n", "data.ok", "data.gone"]
    assert rows[1] == [
        "m1",
        'coma, "comillas"\nnueva línea São Paulo 🛫',
        '{"o":"SCL"}',
        "1.5",
        "",
        "",
    ]
    assert rows[2] == ["m2", "", "", "", "true", ""]
    assert not body.startswith(b"\xef\xbb\xbf")  # UTF-8 without a byte order mark


def test_csv_default_columns_hold_data_as_json_text() -> None:
    writer = make_writer("csv", parse_fields(None), all_fields=True)
    data = '{"big":123456789012345678901234567890,"x":[1,{"y":null}]}'
    rows = csv_rows(writer.write([stored(7, data)]) + writer.close())
    assert rows == [
        ["message_id", "published_at", "ingested_at", "data"],
        ["m7", "2026-03-01T12:00:00.000000Z", "2026-03-01T12:00:01.000000Z", data],
    ]


def test_empty_csv_is_its_header() -> None:
    writer = CsvWriter(parse_fields("data.a"))
    assert writer.write([]) + writer.close() == b"data.a\r\n"


def test_ndjson_is_what_reads_return() -> None:
    messages = [stored(1, {"a": 1}, {"src": "ops"}, 2), stored(2, '{"ñ":"ü"}')]
    writer = NdjsonWriter()
    body = writer.write(messages) + writer.close()
    assert body.splitlines() == [orjson.dumps(message_json(m)) for m in messages]
    assert body.endswith(b"\n")
    assert writer.rows == 2


def test_ndjson_with_fields_keeps_numbers_exact_and_missing_as_null() -> None:
    writer = NdjsonWriter(parse_fields("published_at,data.n,data.obj,data.none,attributes.src"))
    raw = '{"n":123456789012345678901234567890,"obj":{"n":0.1000000000000000000001}}'
    line = writer.write([stored(1, raw, {"src": "ops"})])
    assert line == (
        b'{"published_at":"2026-03-01T12:00:00.000000Z","data.n":123456789012345678901234567890,'
        b'"data.obj":{"n":0.1000000000000000000001},"data.none":null,"attributes.src":"ops"}\n'
    )


def read_parquet(body: bytes) -> pq.ParquetFile:
    return pq.ParquetFile(io.BytesIO(body))


def test_parquet_types_read_back() -> None:
    columns = parse_fields(
        "message_id,published_at,schema_version,data,data.i,data.f,data.mixed_num,data.b,"
        "data.s,data.obj,data.mixed,data.never"
    )
    writer = ParquetWriter(columns)
    rows = [
        {"i": 1, "f": 0.5, "mixed_num": 1, "b": True, "s": "á", "obj": {"k": [1]}, "mixed": 1},
        {"i": -(2**63), "f": 2.0, "mixed_num": 2.5, "b": False, "s": "b", "mixed": "x"},
    ]
    body = writer.write([stored(i, r, version=3) for i, r in enumerate(rows)]) + writer.close()
    file = read_parquet(body)
    schema = file.schema_arrow
    assert schema.field("published_at").type == pa.timestamp("us", tz="UTC")
    expected = {
        "message_id": pa.string(),
        "schema_version": pa.int64(),
        "data": pa.string(),
        "data.i": pa.int64(),
        "data.f": pa.float64(),
        "data.mixed_num": pa.float64(),
        "data.b": pa.bool_(),
        "data.s": pa.string(),
        "data.obj": pa.string(),
        "data.mixed": pa.string(),
        "data.never": pa.string(),
    }
    assert {name: schema.field(name).type for name in expected} == expected
    table = file.read().to_pylist()
    assert table[0]["published_at"] == T0
    assert table[0]["data.obj"] == '{"k":[1]}'
    assert table[1]["data.obj"] is None
    assert [r["data.mixed"] for r in table] == ["1", "x"]
    assert table[1]["data.i"] == -(2**63)
    assert table[0]["schema_version"] == 3
    assert b"latam.nulled" not in (file.metadata.metadata or {})


def test_parquet_streams_row_groups_and_nulls_late_type_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parquet_module, "ROW_GROUP_ROWS", 3)
    writer = ParquetWriter(parse_fields("data.n,data.s"))
    first = writer.write([stored(i, {"n": i, "s": "x"}) for i in range(3)])
    assert first.startswith(b"PAR1")  # the first row group is out before the next batch
    later = writer.write([stored(3, {"n": "three", "s": 4}), stored(4, {"n": 4.5, "s": None})])
    body = first + later + writer.close()
    file = read_parquet(body)
    assert file.metadata.num_row_groups == 2
    assert file.read().to_pydict() == {
        "data.n": [0, 1, 2, None, None],
        "data.s": ["x"] * 3 + ["4", None],
    }
    assert orjson.loads(file.metadata.metadata[b"latam.nulled"]) == {"data.n": 2}


def test_empty_parquet_is_a_valid_file() -> None:
    writer = ParquetWriter(parse_fields(None))
    file = read_parquet(writer.write([]) + writer.close())
    assert file.metadata.num_rows == 0
    assert file.schema_arrow.names == list(DEFAULT_FIELDS)


def test_negotiation() -> None:
    assert negotiate(None, None) == "ndjson"
    assert negotiate(None, "*/*") == "ndjson"
    assert negotiate(None, "text/csv") == "csv"
    assert (
        negotiate(None, "application/x-ndjson;q=0.5, application/vnd.apache.parquet") == "parquet"
    )
    assert negotiate(None, "text/csv;q=0, text/*;q=0.1, application/x-ndjson;q=0.2") == "ndjson"
    assert negotiate("csv", "application/vnd.apache.parquet") == "csv"  # the query wins
    # A type refused by name is not served through a wildcard that also matches it.
    assert negotiate(None, "application/x-ndjson;q=0, */*") == "csv"
    assert negotiate(None, "application/x-ndjson;q=0, application/*") == "parquet"
    assert negotiate(None, "text/csv;q=0.5, */*;q=0.1") == "csv"
    assert negotiate(None, "*/*;q=0.1, application/vnd.apache.parquet;q=0.1") == "parquet"
    assert negotiate(None, "text/csv; Q=0.1, application/x-ndjson;q=0.05") == "csv"
    assert negotiate(None, "text/csv;q=0.2, application/x-ndjson; Q = 0.9") == "ndjson"
    for refused in ("text/csv;q=0, text/*", "*/*;q=0", "text/csv;q=inf", "text/csv;q=nan"):
        with pytest.raises(HTTPException) as caught:
            negotiate(None, refused)
        assert caught.value.status_code == 406, refused
    with pytest.raises(HTTPException) as caught:
        negotiate(None, "application/json")
    assert caught.value.status_code == 406
    with pytest.raises(InvalidQuery):
        parse_format("xlsx")


def test_disposition_names_topic_and_window() -> None:
    value = disposition("vuelos/São", T0, T0 + timedelta(days=1), "csv")
    assert 'filename="vuelos_S_o-20260301T120000Z-20260302T120000Z.csv"' in value
    assert "filename*=UTF-8''vuelos%2FS%C3%A3o-20260301T120000Z-20260302T120000Z.csv" in value


def fill(store: MemoryStore, total: int) -> int:
    topic = store.create_topic("t")
    batch = [
        (
            topic.id,
            NewMessage(
                "t",
                f"m{i}",
                orjson.dumps({"i": i, "even": i % 2 == 0}).decode(),
                published_at=T0 + timedelta(seconds=(total - i) // 4),  # ties, out of seq order
            ),
        )
        for i in range(total)
    ]
    store.write_messages(batch)
    return topic.id


async def collect(export: Export) -> bytes:
    return b"".join([chunk async for chunk in chunks(export)])


@pytest.mark.anyio
@pytest.mark.parametrize("windowed", [False, True])
async def test_the_walk_returns_each_row_once_across_batches(windowed: bool) -> None:
    store = MemoryStore()
    topic_id = fill(store, 103)
    since = T0 + timedelta(seconds=3) if windowed else None
    until = T0 + timedelta(seconds=20) if windowed else None
    filters = parse_filters([("data.even", "is.true")], reserved=())
    where = ExportRange(topic_id, since, until, filters, batch_rows=4)
    body = await collect(Export(store, where, NdjsonWriter(parse_fields("data.i,published_at"))))
    got = [orjson.loads(line) for line in body.splitlines()]
    expected = [
        i
        for i in range(103)
        if i % 2 == 0 and (since is None or since <= T0 + timedelta(seconds=(103 - i) // 4) < until)  # type: ignore[operator]
    ]
    assert sorted(row["data.i"] for row in got) == expected
    assert len(got) == len(expected)
    if windowed:
        times = [row["published_at"] for row in got]
        assert times == sorted(times)
