"""Soak test: a steady publish rate with concurrent reads against ``latam serve``.

Starts ``latam serve`` on the embedded defaults (its own data directory, a free port),
publishes ``--rate`` messages/s for ``--minutes`` while ``--reads`` random pages are read
per second, and samples the resident memory and open file descriptors of the API and
worker processes every ``--sample-seconds``. At the end every accepted message must be
stored exactly once, and memory and descriptors must not have grown past the bounds
(against the sample taken at minute 1). Prints a table and a verdict; exits 1 on failure.

    python -m bench.soak --minutes 10          # make soak
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import batch_body, free_port, latam, latam_env, machine, wait_ready
from bench.ingest import count_stored, create_topic

BATCH = 200
RSS_GROWTH_RATIO = 0.20  # allowed growth: the larger of 20 % and 50 MB
RSS_GROWTH_BYTES = 50 * 2**20
FD_GROWTH = 20
LANES = 4  # concurrent producer and reader connections


@dataclass
class Sample:
    elapsed: float
    accepted: int
    stored: int
    reads: int
    api_rss: int
    api_fds: int
    worker_rss: int
    worker_fds: int


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def worker_pid(serve_pid: int) -> int | None:
    """The ``latam worker`` child the ``serve`` supervisor runs (it may have restarted)."""
    for task in Path(f"/proc/{serve_pid}/task").iterdir():
        children = (task / "children").read_text().split()
        if children:
            return int(children[-1])
    return None


class Producer(threading.Thread):
    """Publishes ``rate`` messages/s in batches on a fixed schedule (one of ``lanes``)."""

    def __init__(self, base: str, topic_id: int, rate: float, until: float, lane: int) -> None:
        super().__init__(daemon=True)
        self.base, self.topic_id, self.rate, self.until = base, topic_id, rate, until
        self.run_id = f"soak{int(time.time())}-{lane}"
        self.accepted: list[str] = []
        self.failed = 0

    def run(self) -> None:
        interval = BATCH / self.rate
        next_slot, start = time.monotonic(), 0
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while time.monotonic() < self.until:
                body = batch_body(self.run_id, start, BATCH)
                response = client.post(
                    f"/v1/topics/{self.topic_id}/messages",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code == 202:
                    self.accepted.extend(response.json()["message_ids"])
                else:
                    self.failed += 1
                start += BATCH
                next_slot += interval
                time.sleep(max(0.0, next_slot - time.monotonic()))


class Reader(threading.Thread):
    """Reads ``rate`` random pages per second (a random ``since`` in the run so far)."""

    def __init__(self, base: str, topic_id: int, rate: float, until: float) -> None:
        super().__init__(daemon=True)
        self.base, self.topic_id, self.rate, self.until = base, topic_id, rate, until
        self.reads = 0
        self.errors = 0

    def run(self) -> None:
        began = datetime.now(UTC)
        rng = random.Random(id(self))
        next_slot = time.monotonic()
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while time.monotonic() < self.until:
                span = (datetime.now(UTC) - began).total_seconds()
                since = began + timedelta(seconds=rng.uniform(0, max(span, 0.001)))
                params = {"limit": 100, "since": since.isoformat()}
                response = client.get(f"/v1/topics/{self.topic_id}/messages", params=params)
                self.reads += 1
                self.errors += response.status_code != 200
                next_slot += 1 / self.rate
                time.sleep(max(0.0, next_slot - time.monotonic()))


def read_ids(client: httpx.Client, topic_id: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/topics/{topic_id}/messages", params=params).json()
        ids.extend(m["id"] for m in page["data"])
        if not (cursor := page["next_cursor"]):
            return ids


def mb(value: int) -> str:
    return f"{value / 2**20:,.1f}"


def table(samples: list[Sample]) -> str:
    rows = [
        "| t (s) | accepted | stored | reads | API RSS (MB) | API fds "
        "| worker RSS (MB) | worker fds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows += [
        f"| {s.elapsed:.0f} | {s.accepted:,} | {s.stored:,} | {s.reads:,} | {mb(s.api_rss)} "
        f"| {s.api_fds} | {mb(s.worker_rss)} | {s.worker_fds} |"
        for s in samples
    ]
    return "\n".join(rows)


def growth_problems(samples: list[Sample]) -> list[str]:
    """Growth from the sample at minute 1 (or the first) to the last, past the bounds."""
    base = next((s for s in samples if s.elapsed >= 60), samples[0])
    last = samples[-1]
    problems = []
    for name, before, after in (
        ("API", base.api_rss, last.api_rss),
        ("worker", base.worker_rss, last.worker_rss),
    ):
        allowed = max(before * RSS_GROWTH_RATIO, RSS_GROWTH_BYTES)
        if after - before > allowed:
            problems.append(f"{name} RSS grew {mb(after - before)} MB (allowed {mb(int(allowed))})")
    for name, before, after in (
        ("API", base.api_fds, last.api_fds),
        ("worker", base.worker_fds, last.worker_fds),
    ):
        if after - before > FD_GROWTH:
            problems.append(f"{name} open files grew by {after - before} (allowed {FD_GROWTH})")
    return problems


def soak(args: argparse.Namespace, data_dir: Path) -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = latam_env(data_dir, port=port)
    with latam(["serve"], env, data_dir / "serve.log") as serve:
        wait_ready(base)
        topic_id = create_topic(base, f"soak-{int(time.time())}")
        started = time.monotonic()
        until = started + args.minutes * 60
        # Several connections each keep a share of the schedule, so one slow answer does
        # not lower the rate.
        producers = [
            Producer(base, topic_id, args.rate / LANES, until, lane) for lane in range(LANES)
        ]
        readers = [Reader(base, topic_id, args.reads / LANES, until) for _ in range(LANES)]
        for thread in (*producers, *readers):
            thread.start()
        samples: list[Sample] = []
        with httpx.Client(base_url=base, timeout=30) as client:
            while True:
                time.sleep(args.sample_seconds)
                worker = worker_pid(serve.pid)
                samples.append(
                    Sample(
                        elapsed=time.monotonic() - started,
                        accepted=sum(len(p.accepted) for p in producers),
                        stored=count_stored(client, topic_id),
                        reads=sum(r.reads for r in readers),
                        api_rss=rss_bytes(serve.pid),
                        api_fds=open_fds(serve.pid),
                        worker_rss=rss_bytes(worker) if worker else 0,
                        worker_fds=open_fds(worker) if worker else 0,
                    )
                )
                print(table(samples[-1:]).splitlines()[-1], flush=True)
                if time.monotonic() >= until:
                    break
            for thread in (*producers, *readers):
                thread.join()
            accepted = [i for p in producers for i in p.accepted]
            deadline = time.monotonic() + args.drain_seconds
            while count_stored(client, topic_id) < len(accepted) and time.monotonic() < deadline:
                time.sleep(1)
            drained = time.monotonic() - until
            stored = read_ids(client, topic_id)
    duration = args.minutes * 60
    lost = len(set(accepted) - set(stored))
    duplicated = len(stored) - len(set(stored))
    rate = len(accepted) / duration
    print(f"\nsoak on {machine()}")
    print(table(samples))
    failed = sum(p.failed for p in producers)
    reads = sum(r.reads for r in readers)
    read_errors = sum(r.errors for r in readers)
    print(
        f"\nsoak: minutes={args.minutes} accepted={len(accepted)} stored={len(stored)} "
        f"duplicated={duplicated} lost={lost} publish_rate={rate:,.0f}/s "
        f"failed_publishes={failed} reads={reads} read_errors={read_errors} "
        f"drain={drained:.1f}s"
    )
    problems = growth_problems(samples)
    if lost or duplicated:
        problems.append(f"{lost} lost, {duplicated} duplicated")
    if rate < 0.95 * args.rate:
        problems.append(f"publish rate {rate:,.0f}/s is below 95 % of {args.rate}/s")
    if read_errors or failed:
        problems.append(f"{failed} publishes and {read_errors} reads failed")
    print("verdict: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2000, help="messages published per second")
    parser.add_argument("--reads", type=int, default=20, help="random page reads per second")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latam-soak-") as tmp:
        return soak(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
