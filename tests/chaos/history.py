"""A history checker for exactly-once ingestion, in the manner of Jepsen and Elle.

One seeded run drives a real deployment (``latam api`` and ``latam worker`` processes on
one broker and one store) with everything a hostile world does at once, records what
every client was told, then checks the end state against that history:

- several topics whose message ids are the same ones (``id-1``, ``id-2`` … in each);
- HTTP publishers that re-send whole batches, and retry failed ones with the same ids;
- a direct producer on the broker itself mixing in malformed messages of every kind;
- a reader tailing every topic by cursor;
- the worker killed with SIGKILL at random moments and started again (SIGTERM on the
  Pub/Sub emulator, which never gives back what a killed client's open Pull took).

Checked at the end: every accepted message stored exactly once, in its own topic, with
its data; every malformed one dead-lettered once with its reason; no good message
dead-lettered; the reader saw every stored row once; the worker never exited by itself.

``make chaos SEED=n MINUTES=m`` runs it in a loop over brokers and stores and prints the
seed of any failure; ``tests/chaos/test_history.py`` runs one fixed seed per pair in CI.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import orjson

from latam.broker.nats import batches
from latam.domain import OutboundMessage, utcnow
from tests.databases import temporary_database
from tests.e2e.backends import BROKERS
from tests.pubsub_emulator import EMULATOR
from tests.support import LatamProcess, free_port, latam_env, wait_http

MAX_MESSAGE_BYTES = 4096
# Brokers and stores, each at least once: the covering set CI runs.
PAIRS = [("sqlite", "sqlite"), ("nats", "postgresql"), ("pubsub-unary", "mysql")]
FAR_FUTURE = "9999-12-31T23:59:59-01:00"


@dataclass
class Run:
    """One run's parameters; ``seed`` makes every choice of the run."""

    seed: int
    broker: str
    store: str
    seconds: float = 25.0
    topics: int = 3
    publishers: int = 2
    malformed_rate: float = 0.05
    # Kills at least, the run going on past ``seconds`` (by at most a minute) until then:
    # on a loaded machine a worker's start-up can take most of the time between kills.
    min_kills: int = 3


@dataclass
class History:
    """What the clients were told, and what they saw."""

    sent: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (topic, id) -> data
    maybe: set[tuple[str, str]] = field(default_factory=set)  # outcome never learnt
    malformed: dict[str, str] = field(default_factory=dict)  # marker -> expected reason
    seen: list[tuple[str, str]] = field(default_factory=list)  # by the tailing reader
    kills: int = 0
    resends: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Report:
    run: Run
    figures: dict[str, int]
    problems: list[str]

    def line(self) -> str:
        figures = " ".join(f"{k}={v}" for k, v in self.figures.items())
        status = "ok" if not self.problems else "FAILED"
        return f"{status} seed={self.run.seed} {self.run.broker}/{self.run.store} {figures}"


class Ids:
    """Per-topic id counters: every topic uses the same ids, each (topic, id) once."""

    def __init__(self, names: list[str]) -> None:
        self.next = dict.fromkeys(names, 0)
        self.lock = threading.Lock()

    def take(self, topic: str, count: int) -> list[str]:
        with self.lock:
            start = self.next[topic]
            self.next[topic] += count
        return [f"id-{n}" for n in range(start, start + count)]


def data(topic: str, message_id: str, rng: random.Random) -> bytes:
    """A message's data: names its topic (misrouting shows) and varies in size."""
    return orjson.dumps({"t": topic, "id": message_id, "pad": "x" * rng.randrange(0, 200)})


class Publisher(threading.Thread):
    """Publishes batches over HTTP; re-sends some; retries failures with the same ids."""

    def __init__(self, ctx: Context, number: int) -> None:
        super().__init__(daemon=True)
        self.ctx, self.rng = ctx, random.Random(f"{ctx.run.seed}-publisher-{number}")

    def run(self) -> None:
        history, sent_batches = self.ctx.history, []
        with httpx.Client(base_url=self.ctx.base, timeout=10) as client:
            while not self.ctx.stop.is_set():
                if sent_batches and self.rng.random() < 0.1:
                    topic, batch = self.rng.choice(sent_batches)  # a hostile re-send
                    history.resends += 1
                else:
                    topic = self.rng.choice(self.ctx.names)
                    ids = self.ctx.ids.take(topic, self.rng.randrange(1, 50))
                    batch = [(i, data(topic, i, self.rng)) for i in ids]
                if self._send(client, topic, batch):
                    sent_batches.append((topic, batch))
                time.sleep(self.rng.random() * 0.02)

    def _send(self, client: httpx.Client, topic: str, batch: list[tuple[str, bytes]]) -> bool:
        body = b'{"messages":[%s]}' % b",".join(
            b'{"id":"%s","data":%s}' % (i.encode(), d) for i, d in batch
        )
        path = f"/v1/topics/{self.ctx.topic_ids[topic]}/messages"
        keys = [(topic, i) for i, _ in batch]
        for _attempt in range(20):
            try:
                response = client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
            except httpx.HTTPError:
                self._record(keys, batch, maybe=True)  # it may have been accepted
                time.sleep(0.2)
                continue
            if response.status_code == 202:
                self._record(keys, batch, maybe=False)
                return True
            if response.status_code not in (429, 503):
                self.ctx.problems.append(
                    f"publish answered {response.status_code}: {response.text}"
                )
                return False
            time.sleep(0.2)
        return False

    def _record(self, keys: list[tuple[str, str]], batch: list[Any], *, maybe: bool) -> None:
        with self.ctx.history.lock:
            for key, (_, payload) in zip(keys, batch, strict=True):
                if maybe:
                    self.ctx.history.maybe.add(key)
                else:
                    self.ctx.history.sent[key] = payload
                    self.ctx.history.maybe.discard(key)


class DirectProducer(threading.Thread):
    """Publishes straight onto the broker, as a producer that never heard of latam."""

    def __init__(self, ctx: Context, raw: Callable[[bytes, Mapping[str, str]], None]) -> None:
        super().__init__(daemon=True)
        self.ctx, self.raw = ctx, raw
        self.rng = random.Random(f"{ctx.run.seed}-direct")
        self.count = 0

    def run(self) -> None:
        while not self.ctx.stop.is_set():
            if self.rng.random() < self.ctx.run.malformed_rate * 4:
                self._malformed()
            else:
                self._good()
            time.sleep(self.rng.random() * 0.05)

    def _good(self) -> None:
        topic = self.rng.choice(self.ctx.names)
        if self.ctx.run.broker == "nats" and self.rng.random() < 0.2:
            self._good_batch(topic)
            return
        [message_id] = self.ctx.ids.take(topic, 1)
        payload = data(topic, message_id, self.rng)
        self.raw(payload, {"topic": topic, "message_id": message_id, "source": "direct"})
        with self.ctx.history.lock:
            self.ctx.history.sent[(topic, message_id)] = payload

    def _good_batch(self, topic: str) -> None:
        """A batch as latam writes one on NATS (``broker.nats.batches``), written by hand."""
        ids = self.ctx.ids.take(topic, self.rng.randint(2, 5))
        messages = [
            OutboundMessage(topic, i, data(topic, i, self.rng), {"source": "direct"}, utcnow())
            for i in ids
        ]
        (group,) = batches.chunks(messages, 2**20)
        body = b"".join(frame for _, frame in group)
        self.raw(body, {batches.BATCH: str(len(group))})
        with self.ctx.history.lock:
            for message in messages:
                self.ctx.history.sent[(topic, message.message_id)] = message.body

    def _malformed(self) -> None:
        self.count += 1
        marker = f"chaos-{self.ctx.run.seed}-{self.count}"
        topic = self.rng.choice(self.ctx.names)
        kinds = self.ctx.malformed_kinds()
        reason, body, attributes = kinds[self.rng.randrange(len(kinds))](marker, topic)
        with self.ctx.history.lock:
            self.ctx.history.malformed[marker] = reason
        if isinstance(attributes, str):  # a row whose attributes are not a JSON object
            self.ctx.insert_raw_row(body, attributes)
        else:
            self.raw(body, attributes)


@dataclass
class Context:
    run: Run
    base: str
    names: list[str]
    topic_ids: dict[str, int]
    ids: Ids
    history: History
    data_dir: Path
    stop: threading.Event = field(default_factory=threading.Event)
    problems: list[str] = field(default_factory=list)

    def malformed_kinds(self) -> list[Callable[[str, str], tuple[str, bytes, Any]]]:
        marker_body = lambda m: orjson.dumps({"marker": m})  # noqa: E731
        kinds: list[Callable[[str, str], tuple[str, bytes, Any]]] = [
            lambda m, t: ("invalid_json", b"not json " + m.encode(), {"topic": t}),
            lambda m, t: ("not_object", orjson.dumps([m]), {"topic": t}),
            lambda m, t: ("missing_topic", marker_body(m), {"source": "direct"}),
            lambda m, t: ("unknown_topic", marker_body(m), {"topic": f"ghost-{m}"}),
            lambda m, t: (
                "invalid_timestamp",
                marker_body(m),
                {"topic": t, "published_at": FAR_FUTURE},
            ),
            lambda m, t: (
                "invalid_timestamp",
                marker_body(m),
                {"topic": t, "published_at": "1733112345000"},
            ),
            lambda m, t: ("invalid_id", marker_body(m), {"topic": t, "message_id": "x" * 200}),
            lambda m, t: (
                "too_large",
                orjson.dumps({"marker": m, "pad": "y" * MAX_MESSAGE_BYTES}),
                {"topic": t},
            ),
        ]
        if self.run.broker == "nats":  # batches and packed attributes written by hand
            frame = lambda attributes, body: (  # noqa: E731
                struct.pack(">II", len(attributes), len(body)) + attributes + body
            )
            kinds += [
                lambda m, t: ("invalid_body", marker_body(m), {batches.BATCH: "2"}),
                lambda m, t: (  # one frame where three are announced (no topic name
                    "invalid_body",  # before the marker: the checker finds the first)
                    frame(orjson.dumps({"source": "direct"}), marker_body(m)),
                    {batches.BATCH: "3"},
                ),
                lambda m, t: (
                    "invalid_attributes",
                    frame(orjson.dumps({"topic": t, "n": 1}), marker_body(m)),
                    {batches.BATCH: "1"},
                ),
                lambda m, t: (
                    "invalid_attributes",
                    marker_body(m),
                    {"topic": t, "Latam-Attributes": "[1]"},
                ),
            ]
        if self.run.broker == "sqlite":  # only a table lets a producer write these
            kinds += [
                lambda m, t: ("invalid_attributes", marker_body(m), orjson.dumps([t]).decode()),
                lambda m, t: ("invalid_attributes", marker_body(m), "{not json"),
            ]
        return kinds

    def insert_raw_row(self, body: bytes, attributes: str) -> None:
        with sqlite3.connect(self.data_dir / "broker.db", timeout=30) as conn:
            now = time.time()
            conn.execute(
                "INSERT INTO queue (body, attributes, published_at, available_at)"
                " VALUES (?, ?, ?, ?)",
                (body, attributes, now, now),
            )


class Reader(threading.Thread):
    """Tails every topic by cursor, as a consumer of the API would."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(daemon=True)
        self.ctx = ctx
        self.cursors: dict[str, str | None] = dict.fromkeys(ctx.names)
        self.finished = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.ctx.base, timeout=10) as client:
            while not self.finished.is_set():
                for name in self.ctx.names:
                    self.poll(client, name)
                time.sleep(0.1)

    def poll(self, client: httpx.Client, name: str) -> None:
        while True:
            params: dict[str, Any] = {"limit": 500}
            if self.cursors[name]:
                params["cursor"] = self.cursors[name]
            try:
                response = client.get(
                    f"/v1/topics/{self.ctx.topic_ids[name]}/messages", params=params
                )
            except httpx.HTTPError:
                return
            if response.status_code != 200:
                return
            page = response.json()
            with self.ctx.history.lock:
                self.ctx.history.seen.extend((name, m["id"]) for m in page["data"])
            self.cursors[name] = page["tail_cursor"]  # resume after the last row shown
            if not page["next_cursor"]:
                return


@contextmanager
def deployment(run: Run, workdir: Path) -> Iterator[tuple[str, dict[str, str], Any]]:
    """The store, the broker and the API of one run; yields base URL, env, backend."""
    with ExitStack() as stack:
        url = stack.enter_context(temporary_database(run.store, workdir))
        backend = stack.enter_context(BROKERS[run.broker](workdir))
        port = free_port()
        env = latam_env(
            workdir,
            port=port,
            database_url=url,
            max_message_bytes=MAX_MESSAGE_BYTES,
            shutdown_timeout_seconds=5,
            ack_deadline_seconds=10 if run.broker.startswith("pubsub") else 3,
            **backend.settings,
        )
        migrate = LatamProcess(["migrate"], env, workdir / "migrate.log").start()
        assert migrate.proc is not None
        assert migrate.proc.wait(120) == 0, migrate.log()
        api = LatamProcess(["api"], env, workdir / "api.log").start()
        stack.callback(api.terminate)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", proc=api, timeout=60)
        yield base, env, backend


def execute(run: Run, workdir: Path) -> Report:
    """One run, start to verdict."""
    rng = random.Random(f"{run.seed}-kills")
    with deployment(run, workdir) as (base, env, backend):
        names = [f"chaos-{run.seed}-{n}" for n in range(run.topics)]
        with httpx.Client(base_url=base, timeout=30) as client:
            topic_ids = {
                name: client.post("/v1/topics", json={"name": name}).json()["id"] for name in names
            }
        history = History()
        ctx = Context(run, base, names, topic_ids, Ids(names), history, workdir)
        worker = LatamProcess(["worker"], env, workdir / "worker.log").start()
        exits: list[str] = []
        threads = [Publisher(ctx, n) for n in range(run.publishers)]
        threads += [DirectProducer(ctx, backend.publish_raw)]
        reader = Reader(ctx)
        for thread in [*threads, reader]:
            thread.start()
        deadline = time.monotonic() + run.seconds
        while time.monotonic() < deadline or (
            history.kills < run.min_kills and time.monotonic() < deadline + 60
        ):
            # A random moment of a worker at work: a worker killed, five times running,
            # before it could finish a batch is the crash loop that max_delivery_attempts
            # exists to end (by setting the messages at the head aside), not this test.
            _wait_started(worker, kills=history.kills)
            time.sleep(rng.uniform(1.0, 4.0))
            worker = _check_alive(worker, exits)
            if run.broker.startswith("pubsub"):
                # Google's emulator keeps a killed client's Pull open and feeds it the
                # messages whose leases lapse, for good (3,000 of 3,000 held 90 s when
                # the kill landed mid-Pull, all back in 10 s when it did not; real
                # Pub/Sub cancels a Pull whose connection is gone). So on the emulator the
                # worker is stopped with SIGTERM: its Pull in flight ends first.
                worker.terminate()
            else:
                worker.kill9()
            history.kills += 1
            worker = LatamProcess(["worker"], env, workdir / "worker.log").start()
        ctx.stop.set()
        for thread in threads:
            thread.join(30)
        worker = _drain(ctx, worker, exits)
        reader.finished.set()
        reader.join(30)
        with httpx.Client(base_url=base, timeout=30) as client:
            reader.poll(client, names[0])  # nothing is left behind the tail
            for name in names:
                reader.poll(client, name)
            stored = {name: _read_all(client, topic_ids[name]) for name in names}
            letters = _dead_letters(client)
            totals = {t["topic"]: t["count"] for t in client.get("/v1/stats").json()["data"]}
        worker = _check_alive(worker, exits)
        worker.terminate()
        # The stats' rollups, written with the rows through every kill: the same figures.
        ctx.problems += [
            f"stats count {totals.get(name)} messages in {name}, {len(rows)} are stored"
            for name, rows in stored.items()
            if totals.get(name) != len(rows)
        ]
        verify = LatamProcess(["rollups", "verify"], env, workdir / "verify.log").start()
        assert verify.proc is not None
        if verify.proc.wait(120) != 0:
            ctx.problems.append(f"rollups differ from the rows: {verify.log()[-1500:]}")
    return _verdict(ctx, stored, letters, exits)


def _wait_started(worker: LatamProcess, *, kills: int, timeout: float = 30) -> None:
    """Until the worker started after ``kills`` kills logs that it consumes."""
    deadline = time.monotonic() + timeout
    while worker.log().count('"worker started"') <= kills and time.monotonic() < deadline:
        time.sleep(0.05)


def _check_alive(worker: LatamProcess, exits: list[str]) -> LatamProcess:
    """The worker, started again if it exited by itself (which the verdict reports)."""
    assert worker.proc is not None
    if worker.proc.poll() is not None:
        exits.append(f"worker exited with {worker.proc.returncode}: {worker.log()[-1500:]}")
        return LatamProcess(worker.args, worker.env, worker.log_path).start()
    return worker


def _drain(ctx: Context, worker: LatamProcess, exits: list[str]) -> LatamProcess:
    """Wait until every accepted message is stored and every malformed one set aside."""
    deadline = time.monotonic() + 180
    with httpx.Client(base_url=ctx.base, timeout=30) as client:
        while time.monotonic() < deadline:
            worker = _check_alive(worker, exits)
            stored = sum(len(_read_all(client, ctx.topic_ids[n])) for n in ctx.names)
            letters = len(_dead_letters(client))
            if stored >= len(ctx.history.sent) and letters >= len(ctx.history.malformed):
                time.sleep(1.0)  # and a moment for anything that should not come
                return worker
            time.sleep(0.5)
    return worker


def _read_all(client: httpx.Client, topic_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/topics/{topic_id}/messages", params=params).json()
        rows.extend(page["data"])
        if not (cursor := page["next_cursor"]):
            return rows


def _dead_letters(client: httpx.Client) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": after} if after else {})}
        page = client.get("/v1/dead-letters", params=params).json()
        letters.extend(page["data"])
        if not (after := page.get("next_cursor")):
            return letters


def _marker(letter: dict[str, Any]) -> str | None:
    import base64

    body = (
        orjson.dumps(letter["data"])
        if letter["data"] is not None
        else base64.b64decode(letter["body_base64"] or "")
    )
    text = body.decode(errors="replace")
    start = text.find("chaos-")
    if start < 0:
        return None
    end = start + 6
    while end < len(text) and (text[end].isdigit() or text[end] == "-"):
        end += 1
    return text[start:end]


def _verdict(
    ctx: Context, stored: dict[str, list[dict[str, Any]]], letters: list[Any], exits: list[str]
) -> Report:
    history, problems = ctx.history, list(ctx.problems) + exits
    counts = Counter((name, row["id"]) for name, rows in stored.items() for row in rows)
    for name, rows in stored.items():
        for row in rows:
            key = (name, row["id"])
            if row["data"].get("t") != name:
                problems.append(f"misrouted: {key} holds data of {row['data'].get('t')!r}")
            elif key in history.sent and orjson.loads(history.sent[key]) != row["data"]:
                problems.append(f"corrupted: {key}")
            elif key not in history.sent and key not in history.maybe:
                problems.append(f"stored but never accepted: {key}")
    lost = set(history.sent) - set(counts)
    duplicated = [key for key, n in counts.items() if n > 1]
    problems += [f"lost: {key}" for key in sorted(lost)[:20]]
    problems += [f"duplicated: {key}" for key in duplicated[:20]]
    by_marker: Counter[str] = Counter()
    for letter in letters:
        marker = _marker(letter)
        if marker is None or marker not in history.malformed:
            problems.append(
                f"good message dead-lettered: {letter['message_id']} {letter['reason']}"
            )
            continue
        by_marker[marker] += 1
        if letter["reason"] != history.malformed[marker]:
            want = history.malformed[marker]
            problems.append(f"{marker}: reason {letter['reason']!r}, expected {want!r}")
    for marker in history.malformed:
        if by_marker[marker] != 1:
            problems.append(f"{marker}: dead-lettered {by_marker[marker]} times, expected once")
    seen = Counter(history.seen)
    unseen = set(counts) - set(seen)
    problems += [f"the reader never saw {key}" for key in sorted(unseen)[:20]]
    problems += [f"the reader saw {key} twice" for key, n in seen.items() if n > 1][:20]
    figures = {
        "accepted": len(history.sent),
        "resends": history.resends,
        "malformed": len(history.malformed),
        "kills": history.kills,
        "stored": sum(counts.values()),
        "dead_letters": len(letters),
        "read": len(history.seen),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "misrouted": sum(1 for p in problems if p.startswith("misrouted")),
    }
    return Report(ctx.run, figures, problems)


def main(argv: list[str] | None = None) -> int:
    """``make chaos``: runs over every pair until the time is up; exit 1 on a failure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seconds-per-run", type=float, default=60.0)
    args = parser.parse_args(argv)
    ends = time.monotonic() + args.minutes * 60
    seed, totals, failed = args.seed, Counter[str](), False
    try:
        failed = _loop(seed, ends, args.seconds_per_run, totals)
    finally:
        EMULATOR.stop()  # started on first use by the Pub/Sub pair; stopped by its PID
    print("total " + " ".join(f"{k}={v}" for k, v in sorted(totals.items())))
    return 1 if failed else 0


def _loop(seed: int, ends: float, seconds: float, totals: Counter[str]) -> bool:
    failed = False
    while time.monotonic() < ends:
        for broker, store in PAIRS:
            run = Run(seed=seed, broker=broker, store=store, seconds=seconds)
            with TemporaryDirectory(prefix="latam-chaos-") as workdir:
                report = execute(run, Path(workdir))
            print(report.line(), flush=True)
            totals.update(report.figures)
            totals["runs"] += 1
            if report.problems:
                failed = True
                print(f"replay with: make chaos SEED={seed} (pair {broker}/{store})")
                for problem in report.problems[:50]:
                    print(f"  {problem}")
        seed += 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
