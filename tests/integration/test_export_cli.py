"""``latam export`` end to end: a subprocess against a real ``latam serve``, writing the
file through ``FILE.partial``; errors are one ``latam: error:`` line naming the field."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq
import pytest

from tests.support import create_topic, running_serve, unique, wait_for_count

DATA = [{"flight": f"LA{800 + n % 3}", "delay_min": n, "city": "São Paulo"} for n in range(300)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with running_serve(tmp_path_factory.mktemp("export-cli")) as (base, _proc):
        with httpx.Client(base_url=base, timeout=30) as client:
            name = unique("vuelos-")
            topic_id = create_topic(client, name)
            body = {"messages": [{"data": data} for data in DATA]}
            assert client.post(f"/v1/topics/{topic_id}/messages", json=body).status_code == 202
            wait_for_count(client, topic_id, len(DATA))
        yield base, name


def latam_export(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATAM_")}
    return subprocess.run(
        [sys.executable, "-m", "latam", "export", "--url", base, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_csv_with_a_filter(served: tuple[str, str], tmp_path: Path) -> None:
    base, name = served
    out = tmp_path / "la800.csv"
    done = latam_export(
        base, name, "data.flight=eq.LA800", "--fields", "data.delay_min,data.city", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert f"to {out}" in done.stderr
    with out.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["data.delay_min", "data.city"]
    assert [int(r[0]) for r in rows[1:]] == list(range(0, 300, 3))
    assert {r[1] for r in rows[1:]} == {"São Paulo"}
    assert not Path(f"{out}.partial").exists()


def test_parquet_and_ndjson(served: tuple[str, str], tmp_path: Path) -> None:
    base, name = served
    parquet = tmp_path / "all.parquet"
    done = latam_export(base, name, "--fields", "published_at,data.delay_min", "-o", str(parquet))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(parquet)
    assert sorted(table.column("data.delay_min").to_pylist()) == list(range(300))
    lines = tmp_path / "all.out"
    done = latam_export(base, name, "--format", "ndjson", "-o", str(lines))
    assert done.returncode == 0, done.stderr
    assert "exported 300 rows" in done.stderr
    assert [orjson.loads(line)["data"] for line in lines.read_bytes().splitlines()] == DATA


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fields", "data..x"], "latam: error: fields: "),
        (["data.delay_min=bogus.1"], "latam: error: data.delay_min: "),
        (["--since", "yesterday"], "latam: error: query.since: "),
        (["data.delay_min"], "latam: error: 'data.delay_min': a filter is FIELD=OP.VALUE"),
    ],
)
def test_errors_name_the_field_and_leave_no_file(
    served: tuple[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    base, name = served
    out = tmp_path / "bad.csv"
    done = latam_export(base, name, *args, "-o", str(out))
    assert done.returncode != 0
    assert done.stderr.startswith(message), done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_topic(served: tuple[str, str], tmp_path: Path) -> None:
    base, _ = served
    done = latam_export(base, "no-such-topic", "-o", str(tmp_path / "x.csv"))
    assert done.returncode == 1
    assert done.stderr.startswith("latam: error: TOPIC: topic 'no-such-topic' does not exist")


def test_an_output_that_cannot_be_written_is_refused_before_the_transfer(
    served: tuple[str, str], tmp_path: Path
) -> None:
    base, name = served
    done = latam_export(base, name, "-o", str(tmp_path / "missing" / "x.csv"))
    assert done.returncode == 2
    assert done.stderr.startswith("latam: error: -o: the directory "), done.stderr
    assert "Traceback" not in done.stderr
    done = latam_export(base, name, "-o", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith(f"latam: error: -o: {tmp_path} is a directory"), done.stderr
    assert list(tmp_path.parent.glob(f"{tmp_path.name}*")) == [tmp_path]
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_whole(served: tuple[str, str], tmp_path: Path) -> None:
    base, name = served
    out = tmp_path / "x.ndjson"
    out.write_bytes(b"old\n" * 1000)
    done = latam_export(base, name, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert len(out.read_bytes().splitlines()) == len(DATA)
