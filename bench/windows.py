"""Time-window reads: a 1,000,000-message topic loaded straight into the store, then
`wrk` on `GET /v1/topics/{id}/messages?limit=100&since=…` with `since` at 0 %, 50 %,
90 % and 100 % of the topic's publish times, against unfiltered reads at random cursors
of the same topic in the same run."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from bench.common import PAYLOAD_PAD, Figure, analyze
from bench.reads import parse_wrk, run_wrk
from latam.domain import NewMessage
from latam.settings import Settings
from latam.storage import migrate, rollups
from latam.storage.bulk_insert import BulkInsert
from latam.storage.dialects import build_engine
from latam.storage.repository import SqlStore

START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
BATCH = 500  # one publish time per batch, as an HTTP batch gets
POSITIONS = (0, 50, 90, 100)


def published_at(index: int, total: int) -> datetime:
    batch_start = index - index % BATCH
    return START + SPAN * (batch_start / total)


def load(url: str, data_dir: Path, sizes: Sequence[int]) -> list[int]:
    """One topic per entry of ``sizes`` with that many messages, published over 30 days,
    written straight into the store: the worker's batch insert and rollup update, in
    batches of 5,000, without the duplicate check a fresh topic does not need (nor the
    broker, nor HTTP)."""
    engine = build_engine(url, Settings(data_dir=data_dir))
    migrate.upgrade(engine)
    store = SqlStore(engine)
    ids = [store.create_topic(f"bench-{n}").id for n in range(len(sizes))]
    insert = BulkInsert()
    started = time.monotonic()
    step = 10 * BATCH
    for number, (topic_id, total) in enumerate(zip(ids, sizes, strict=True)):
        for start in range(0, total, step):
            batch = [
                NewMessage(
                    f"bench-{number}",
                    f"w-{i}",
                    f'{{"seq":{i},"flight":"LA{i % 9999:04d}","pad":"{PAYLOAD_PAD}"}}',
                    {},
                    published_at(i, total),
                )
                for i in range(start, min(start + step, total))
            ]
            with engine.begin() as conn:
                insert(conn, topic_id, batch, datetime.now(UTC))
                rollups.add(conn, {topic_id: batch})
    elapsed = time.monotonic() - started
    print(f"  loaded {sum(sizes):,} messages in {elapsed:.0f} s", flush=True)
    store.close()
    analyze(url)
    return ids


def since_wrk(
    base: str, topic_id: int, since: datetime, *, seconds: int
) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, not-2xx responses) on the first page after ``since``."""
    path = f"/v1/topics/{topic_id}/messages?limit=100&since={quote(since.isoformat())}"
    return wrk_url(base + path, seconds=seconds)


def wrk_url(url: str, *, seconds: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, not-2xx responses) of ``wrk -t2 -c16`` on one URL."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    return parse_wrk(out)


def measure(
    label: str, url: str, data_dir: Path, serve: object, total: int, seconds: int
) -> list[Figure]:
    """Load, start `latam serve` on the store, and read: unfiltered, then each position."""
    [topic_id] = load(url, data_dir, [total])
    with serve(data_dir, database_url=url) as base:  # type: ignore[operator]
        plain = run_wrk(base, topic_id, total, seconds=seconds)
        figures = [
            Figure(f"Reads unfiltered, {label}", "requests/s", [plain[0]]),
            Figure(f"Reads unfiltered p99, {label}", "ms", [plain[2]]),
        ]
        last = published_at(total - 1, total)
        for position in POSITIONS:
            since = START + (last - START) * (position / 100)
            rps, _p50, p99, errors = since_wrk(base, topic_id, since, seconds=seconds)
            if errors:
                raise RuntimeError(f"{errors} responses were not 2xx at since={since}")
            figures.append(Figure(f"Reads since {position} %, {label}", "requests/s", [rps]))
            figures.append(Figure(f"Reads since {position} % p99, {label}", "ms", [p99]))
            print(f"  since {position} %: {rps:,.0f} req/s, p99 {p99:.1f} ms", flush=True)
    return figures
