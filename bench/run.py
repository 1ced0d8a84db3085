"""``make bench``: every figure of docs/benchmarks.md, measured several times.

Starts and stops everything it uses, talks to 127.0.0.1 only, and appends a dated section
with the machine's facts and the exact command to docs/benchmarks.md.

    PYTHONPATH=. .venv/bin/python -m bench.run [--quick] [--only ingest,reads,...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    console,
    contracts,
    export,
    filters,
    freshness,
    http_floor,
    memory,
    read_floor,
    reads,
    stats,
    tail,
    windows,
)
from bench.common import ROOT, Figure, analyze, free_port, latam, latam_env, machine, wait_ready
from bench.floor import floor_rate, mysql_floor_rate, postgres_floor_rate
from bench.ingest import create_topic, publish_and_wait

PARTS = (
    "floor",
    "http-floor",
    "ingest",
    "reads",
    "windows",
    "stats",
    "filters",
    "contracts",
    "freshness",
    "memory",
    "export",
    "stores",
    "brokers",
    "console",
    "tail",
)


def emit(figures: list[Figure]) -> list[Figure]:
    """Print figures as soon as they are measured (the report comes at the end)."""
    for figure in figures:
        print(figure.row(), flush=True)
    return figures


@contextmanager
def serve(data_dir: Path, **settings: str) -> Iterator[str]:
    port = free_port()
    env = latam_env(data_dir, port=port, **settings)
    with latam(["serve"], env, data_dir / "serve.log"):
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        yield base


def ingest_and_reads(
    label: str, runs: int, total: int, wrk_seconds: int, want_reads: bool, **settings: str
) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), **settings) as base:
        ingested, topic_id = [], 0
        for run in range(runs):
            topic_id = create_topic(base, f"bench-{uuid.uuid4().hex[:8]}")
            elapsed = publish_and_wait(base, topic_id, f"r{run}", total)
            ingested.append(total / elapsed)
        figures.append(Figure(f"E2E ingest, {label}", "messages/s", ingested))
        if "database_url" in settings:
            analyze(settings["database_url"])
        if want_reads:
            samples = [
                reads.run_wrk(base, topic_id, total, seconds=wrk_seconds) for _ in range(runs)
            ]
            served = [s[0] for s in samples]
            figures.append(Figure(f"Reads, {label}", "requests/s", served))
            figures.append(Figure(f"Reads p50, {label}", "ms", [s[1] for s in samples]))
            figures.append(Figure(f"Reads p99, {label}", "ms", [s[2] for s in samples]))
            figures.append(Figure(f"Reads not 2xx, {label}", "responses", [s[3] for s in samples]))
            url = settings.get("database_url") or f"sqlite:///{Path(tmp) / 'latam.db'}"
            floors = read_floor.measure(label, url, base, topic_id, total, runs, wrk_seconds)
            store_floor = floors[2].median  # requests/s of the store's floor
            share = [100 * rps / store_floor for rps in served]
            figures += [*floors, Figure(f"Reads / read floor (store), {label}", "%", share)]
    return figures


def schema_cost(runs: int, total: int) -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp)) as base:
        return contracts.measure(base, runs, total)


def console_cost(runs: int, total: int, seconds: int) -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp)) as base:
        return console.measure(base, runs, total, seconds)


def fresh(runs: int, seconds: int) -> list[Figure]:
    p50s, p99s = [], []
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp)) as base:
        for _ in range(runs):
            topic_id = create_topic(base, f"fresh-{uuid.uuid4().hex[:8]}")
            delays = sorted(freshness.measure(base, topic_id, rate=5000, seconds=seconds))
            p50s.append(statistics.median(delays) * 1000)
            p99s.append(delays[int(len(delays) * 0.99) - 1] * 1000)
    return [
        Figure("Freshness p50 at 5,000 msg/s", "ms", p50s),
        Figure("Freshness p99 at 5,000 msg/s", "ms", p99s),
    ]


def live_tail(runs: int, seconds: int) -> list[Figure]:
    """Delay from stored to received on the live tail: 50 subscribers, 1,000 msg/s."""
    p50s, p99s, rates = [], [], []
    # The defaults, but for the streams per caller: every subscriber here is one address.
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), stream_max_per_key="50") as base:
        for _ in range(runs):
            topic_id = create_topic(base, f"tail-{uuid.uuid4().hex[:8]}")
            delays, counts, achieved = tail.measure(base, topic_id, seconds=seconds)
            delays.sort()
            p50s.append(statistics.median(delays) * 1000)
            p99s.append(delays[int(len(delays) * 0.99) - 1] * 1000)
            rates.append(achieved)
            print(
                f"  {achieved:,.0f} msg/s published; events per subscriber {min(counts)}"
                f" to {max(counts)} of {1000 * seconds:,}"
            )
    return [
        Figure("Live tail delay p50, 50 subscribers at 1,000 msg/s", "ms", p50s),
        Figure("Live tail delay p99, 50 subscribers at 1,000 msg/s", "ms", p99s),
        Figure("Live tail publish rate achieved", "messages/s", rates),
    ]


def mem(runs: int, total: int) -> list[Figure]:
    """Worker peak RSS while a backlog of ``total`` drains: the embedded broker, then NATS
    JetStream (the Pub/Sub emulator is not filled with such a backlog: it accepts a few
    thousand messages a second, see docs/brokers.md)."""
    from tests.e2e.backends import BROKERS

    figures: list[Figure] = []
    for name, label in (("sqlite", ""), ("nats", ", NATS broker")):
        peaks, rates = [], []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as tmp, BROKERS[name](Path(tmp)) as backend:
                memory.fill(Path(tmp), total, **backend.settings)
                peak, drained = memory.peak_rss_mb(Path(tmp), total, **backend.settings)
                peaks.append(peak)
                rates.append(total / drained)
                print(f"  {name}: drained {total:,} in {drained:.1f}s, peak RSS {peak:.0f} MB")
        figures += [
            Figure(f"Worker peak RSS, {total:,} backlog{label}", "MB", peaks),
            Figure(f"Worker drain rate, {total:,} backlog{label}", "messages/s", rates),
        ]
    return figures


def exports(total: int) -> list[Figure]:
    """Export of ``total`` messages from the embedded store (SQLite), CSV and Parquet."""
    with tempfile.TemporaryDirectory() as tmp:
        return export.measure("embedded", f"sqlite:///{Path(tmp) / 'store.db'}", Path(tmp), total)


def other_stores(runs: int, total: int, wrk_seconds: int) -> list[Figure]:
    """E2E ingest and reads with PostgreSQL and MariaDB as the store, each with its own
    floor measured in the same run, and E2E as a share of that floor."""
    from tests.databases import temporary_database

    floors = {"postgresql": postgres_floor_rate, "mysql": mysql_floor_rate}
    figures: list[Figure] = []
    for kind, label in (("postgresql", "PostgreSQL store"), ("mysql", "MariaDB store")):
        rates = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as tmp, temporary_database(kind, Path(tmp)) as url:
                rates.append(floors[kind](url, Path(tmp), total))
        floor = Figure(f"Floor, {label}", "rows/s", rates)
        with tempfile.TemporaryDirectory() as tmp, temporary_database(kind, Path(tmp)) as url:
            measured = ingest_and_reads(label, runs, total, wrk_seconds, True, database_url=url)
        e2e = measured[0]
        share = [100 * rate / floor.median for rate in e2e.samples]
        figures += [floor, *measured, Figure(f"E2E / floor, {label}", "%", share)]
    return figures


STORE_KINDS = (
    ("sqlite", "embedded"),
    ("postgresql", "PostgreSQL store"),
    ("mysql", "MariaDB store"),
)


def per_store(measure: Any, total: int, seconds: int) -> list[Figure]:
    """``measure`` on a private database of each store, loaded by ``measure`` itself."""
    from tests.databases import temporary_database

    figures: list[Figure] = []
    for kind, label in STORE_KINDS:
        with tempfile.TemporaryDirectory() as tmp, temporary_database(kind, Path(tmp)) as url:
            figures += measure(label, url, Path(tmp), serve, total, seconds)
    return figures


def other_brokers(runs: int, total: int) -> list[Figure]:
    from tests.e2e.backends import BROKERS
    from tests.pubsub_emulator import EMULATOR

    try:
        return _other_brokers(BROKERS, runs, total)
    finally:
        EMULATOR.stop()  # started on demand by the Pub/Sub back-end; stopped by its PID


def _other_brokers(brokers: Any, runs: int, total: int) -> list[Figure]:
    figures: list[Figure] = []
    for name in sorted(set(brokers) - {"sqlite"}):
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            try:
                backend = stack.enter_context(brokers[name](Path(tmp)))
            except Exception as exc:  # a broker that cannot start here is reported, not fatal
                print(f"  {name}: not measured ({type(exc).__name__}: {exc})")
                continue
            figures += ingest_and_reads(f"{name} broker", runs, total, 0, False, **backend.settings)
    return figures


def write_report(figures: list[Figure], command: str, started: float, failures: list[str]) -> str:
    lines = [
        f"### Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {machine()}",
        f"- Command: `{command}`",
        f"- Duration: {time.monotonic() - started:.0f} s",
        "",
        "| Figure | Median | Min to max | Unit | Runs |",
        "| --- | --- | --- | --- | --- |",
        *(figure.row() for figure in figures),
        "",
    ]
    if failures:
        lines.extend([*(f"- {failure}" for failure in failures), ""])
    floor = next((f for f in figures if f.name == "Floor: raw sqlite3 inserts"), None)
    e2e = next((f for f in figures if f.name == "E2E ingest, embedded"), None)
    if floor and e2e:
        lines.insert(-1, f"E2E / floor = {e2e.median / floor.median:.0%} (medians).")
        lines.insert(-1, "")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma list of {PARTS}")
    parser.add_argument("--no-write", action="store_true", help="do not touch the docs")
    parser.add_argument(
        "--stats-messages",
        type=int,
        default=0,
        help="messages of the big topic of the stats part (default 5,000,000; 50,000 quick);"
        " from 360,000 up it fills every hourly bucket of its 30 days, as 5,000,000 does",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    runs = 1 if args.quick else 3
    total = 20_000 if args.quick else 200_000
    started = time.monotonic()
    figures: list[Figure] = []
    failures: list[str] = []

    def part(name: str, measure: Any) -> None:
        """One part of the bench; a failure is reported and the other parts still run."""
        try:
            figures.extend(measure())
        except Exception as exc:
            failures.append(f"{name}: not measured ({type(exc).__name__}: {exc})")
            print(f"  {failures[-1]}", flush=True)

    if "floor" in only:
        part(
            "floor",
            lambda: [
                Figure(
                    "Floor: raw sqlite3 inserts",
                    "rows/s",
                    [floor_rate(total) for _ in range(runs)],
                )
            ],
        )
    if only & {"http-floor", "reads", "stats", "filters", "stores", "windows"}:
        # Measured with every read part, in the same run: what the machine itself allows.
        part("http-floor", lambda: http_floor.measure(runs, 5 if args.quick else 10))
    if only & {"ingest", "reads"}:
        wrk_seconds = 5 if args.quick else 15
        part(
            "ingest",
            lambda: ingest_and_reads("embedded", runs, total, wrk_seconds, "reads" in only),
        )
    if "windows" in only:
        part(
            "windows",
            lambda: per_store(
                windows.measure, 50_000 if args.quick else 1_000_000, 3 if args.quick else 8
            ),
        )
    if "stats" in only:
        part(
            "stats",
            lambda: per_store(
                stats.measure,
                args.stats_messages or (50_000 if args.quick else 5_000_000),
                3 if args.quick else 8,
            ),
        )
    if "filters" in only:
        part(
            "filters",
            lambda: per_store(
                filters.measure, 20_000 if args.quick else 200_000, 3 if args.quick else 8
            ),
        )
    if "contracts" in only:
        part("contracts", lambda: schema_cost(runs, total))
    if "freshness" in only:
        part("freshness", lambda: fresh(runs, 5 if args.quick else 12))
    if "memory" in only:
        part("memory", lambda: mem(1 if args.quick else 2, 100_000 if args.quick else 1_000_000))
    if "export" in only:
        part("export", lambda: exports(100_000 if args.quick else 1_000_000))
    if "stores" in only:
        part(
            "stores",
            lambda: other_stores(
                1 if args.quick else 2, total if args.quick else total // 2, 5 if args.quick else 10
            ),
        )
    if "brokers" in only:
        part(
            "brokers",
            lambda: other_brokers(1 if args.quick else 2, total if args.quick else total // 2),
        )
    if "console" in only:
        part(
            "console",
            lambda: console_cost(1 if args.quick else 5, total // 2, 5 if args.quick else 10),
        )
    if "tail" in only:
        part("tail", lambda: live_tail(runs, 10 if args.quick else 20))
    command = "make bench" + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else "")
    report = write_report(figures, command, started, failures)
    print(report)
    if not args.no_write:
        doc = ROOT / "docs" / "benchmarks.md"
        existing = doc.read_text() if doc.exists() else "# Benchmarks\n\n## Results\n\n"
        doc.write_text(existing.rstrip("\n") + "\n\n" + report)


if __name__ == "__main__":
    main()
