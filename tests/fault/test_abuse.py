"""No request can stall or exhaust the API: the load-and-abuse scenario, on a real
``latam api`` (two processes, keys required) over the embedded store and PostgreSQL.

A topic holds 1,000 messages of 250 KB. For ``SECONDS``, 32 readers ask for
``limit=1000`` pages of it without pause and four flooders send made-up keys (another
process, ``abuse_load``), while a prober GETs ``/healthz`` every 10 ms on a new connection
each time and a normal reader reads 10-row pages of a small topic (each from its own
process too). Asserted: the
API's process tree stays under ``MEMORY_BOUND``, ``/healthz`` p99 <= 50 ms, the normal
reader's p99 within ``NORMAL_P99_MS``, every made-up key refused, and malformed keys cost
no key-table read (``latam_api_key_lookups_total``). The figures are printed for
docs/reliability.md. When the latency bounds fail, the scenario runs once more on a new
API process and that run must meet them (see the test); every other bound holds in both.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from latam.domain import NewMessage
from latam.keys import create_key
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.keys import SqlKeyStore
from latam.storage.repository import SqlStore
from tests.databases import temporary_database
from tests.support import LatamProcess, free_port, latam_env, wait_http

SECONDS = 15.0

MESSAGES, MESSAGE_BYTES = 1_000, 250_000
MEMORY_BOUND = 1024**3  # the process tree's resident memory, all processes together
HEALTHZ_P99_MS = 50
# The normal reader's p99, on every store (docs/reliability.md has the figures).
NORMAL_P99_MS = 100
# serial: its p99 bounds hold on a machine that runs nothing else (`make test`).
pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.timeout(600)]


def load(url: str, data_dir: Path) -> tuple[int, int, str]:
    """The big topic, a small one, and a read key, written straight into the store."""
    engine = build_engine(url, Settings(data_dir=data_dir))
    migrate.upgrade(engine)
    store = SqlStore(engine)
    try:
        big, small = store.create_topic("big"), store.create_topic("small")
        body = '{"p":"' + "x" * (MESSAGE_BYTES - 8) + '"}'
        for start in range(0, MESSAGES, 50):
            store.write_messages(
                [(big.id, NewMessage("big", f"b{i}", body, {})) for i in range(start, start + 50)]
            )
        store.write_messages(
            [(small.id, NewMessage("small", f"s{i}", "{}", {})) for i in range(50)]
        )
        _, token = create_key(SqlKeyStore(engine), name="reader", scopes=["read"])
        return big.id, small.id, token
    finally:
        store.close()


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def key_lookups(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("latam_api_key_lookups_total{")
    )


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


class Sampler(threading.Thread):
    """Calls ``probe`` every ``every`` seconds until stopped, keeping what it returns."""

    def __init__(self, probe: object, every: float) -> None:
        super().__init__(daemon=True)
        self.probe, self.every = probe, every
        self.samples: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.samples.append(self.probe())  # type: ignore[operator]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_heavy_readers_and_a_key_flood_do_not_stall_the_api(kind: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with temporary_database(kind, data_dir) as url:
        big, small, token = load(url, data_dir)

        def attempt(n: int) -> dict[str, float]:
            """The scenario on a new ``latam api`` (so the failure budgets start full)."""
            port = free_port()
            env = latam_env(
                data_dir,
                port=port,
                database_url=url,
                auth="on",
                api_workers=2,
                rate_limit_per_second=0,
            )
            api = LatamProcess(["api"], env, tmp_path / f"api-{n}.log").start()
            base = f"http://127.0.0.1:{port}"
            try:
                wait_http(f"{base}/healthz", proc=api)
                figures = run_scenario(base, api.pid, big, small, token)
            finally:
                api.terminate()
            print(f"\nabuse[{kind}] attempt {n}: {json.dumps(figures)}")
            assert_bounded(figures)
            return figures

        figures = attempt(1)
        # The latency bounds are measured on two cores that the API, the database, the
        # load and the probes share with whatever else the machine runs: when the whole
        # machine stalls (CPU steal; a failing CI run had /healthz p50 at 7.8 ms instead
        # of 2), the scenario runs once more on a new API process and that run must meet
        # them. So must a connection closed without an answer (once in a CI run that
        # shared the machine with other tests; no API process restarted), which must not
        # happen again. Every other bound holds in every run.
        if not latency_met(figures) or figures.get("heavy_dropped", 0):
            figures = attempt(2)
    assert figures["healthz_p99_ms"] <= HEALTHZ_P99_MS
    assert figures["normal_p99_ms"] <= NORMAL_P99_MS
    assert figures.get("heavy_dropped", 0) == 0, "connections closed without an answer"


def latency_met(figures: dict[str, float]) -> bool:
    return figures["healthz_p99_ms"] <= HEALTHZ_P99_MS and figures["normal_p99_ms"] <= NORMAL_P99_MS


def assert_bounded(figures: dict[str, float]) -> None:
    """The bounds that do not depend on the machine's speed."""
    assert figures["heavy_200"] > 0, "the heavy readers were served"
    assert figures["heavy_page_mb_max"] <= 4.5, "pages are cut at LATAM_MAX_PAGE_BYTES"
    assert figures["rss_max_mb"] < MEMORY_BOUND / 1024**2
    assert figures["malformed_key_lookups"] == 0
    # Well-formed made-up ids cost a lookup until the address's failure budget is spent
    # (30 at once, then 1/s, per API process).
    assert figures["flood_lookups"] <= 2 * (30 + SECONDS + 5)
    refused = figures.get("flood_401", 0) + figures.get("flood_429", 0)
    assert refused == figures["flood_sent"], "every made-up key was refused"
    assert figures.get("flood_429", 0) > 0, "the address ran out of failed attempts"


def run_scenario(base: str, pid: int, big: int, small: int, token: str) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=30) as client:
        # A new connection each time, so that both API processes verify the key before
        # the flood spends the address's failure budget.
        for _ in range(20):
            fresh = {**auth, "Connection": "close"}
            answer = client.get(f"/v1/topics/{small}/messages?limit=10", headers=fresh)
            assert answer.status_code == 200, answer.text
        one = client.get(f"/v1/topics/{big}/messages?limit=1000", headers=auth)
        page_mb = len(one.content) / 1024**2
        rss_idle = tree_rss(pid)

        before = key_lookups(base)
        for _ in range(25):  # malformed tokens only, within the failure budget: all 401
            bad = client.get(f"/v1/topics/{big}/messages", headers={"Authorization": "Bearer x"})
            assert bad.status_code == 401
        time.sleep(1.5)
        malformed = key_lookups(base) - before

        memory = Sampler(lambda: tree_rss(pid), 0.5)
        before = key_lookups(base)
        load = [sys.executable, "-m", "tests.fault.abuse_load"]
        abuse = [f"--base={base}", f"--topic={big}", f"--key={token}", f"--seconds={SECONDS}"]
        measured = SECONDS - 2
        # The probes start first: the normal reader's key is then used from its API process
        # before the flood spends the address's failure budget ("keys it already used keep
        # working"; that is per API process: a key new to a process is refused from a
        # flooded address, see docs/reliability.md). Both measure from when the heavy
        # readers have piled up.
        probes = [
            subprocess.Popen(
                [*load, "probe", f"--base={base}", f"--seconds={measured}", *extra],
                stdout=subprocess.PIPE,
            )
            for extra in (
                ["--path=/healthz", "--fresh", "--start-after=1.5"],
                [
                    f"--path=/v1/topics/{small}/messages?limit=10",
                    f"--key={token}",
                    "--every=0.02",
                    "--start-after=1.5",
                ],
            )
        ]
        time.sleep(0.5)  # the probes' first requests
        hostile = subprocess.Popen(
            [*load, "abuse", *abuse],
            stdout=subprocess.PIPE,
            # The load generator shares the machine's two cores with the API: at a lower
            # priority, what is measured is the API's own responsiveness, as when the
            # attackers' CPUs are elsewhere.
            preexec_fn=lambda: os.nice(10),
        )
        memory.start()
        try:
            healthz, normal = (json.loads(p.communicate(timeout=SECONDS + 60)[0]) for p in probes)
            out, _ = hostile.communicate(timeout=SECONDS + 120)
        finally:
            for process in (hostile, *probes):
                if process.poll() is None:
                    process.kill()
            memory.halt.set()
            memory.join(30)
        assert hostile.returncode == 0
        assert all(p.returncode == 0 for p in probes)
        assert healthz["statuses"] == {"200": len(healthz["latencies"])}, healthz["statuses"]
        assert normal["statuses"] == {"200": len(normal["latencies"])}, normal["statuses"]
        healthz, normal = healthz["latencies"], normal["latencies"]
        counts: dict[str, float] = json.loads(out)
        return {
            **counts,
            "heavy_page_mb_max": round(page_mb, 2),
            "rss_idle_mb": round(rss_idle / 1024**2),
            "rss_max_mb": round(max(memory.samples) / 1024**2),
            "healthz_probes": len(healthz),
            "healthz_p50_ms": round(statistics.median(healthz) * 1000, 1),
            "healthz_p99_ms": round(p99(healthz) * 1000, 1),
            "normal_reads": len(normal),
            "normal_p50_ms": round(statistics.median(normal) * 1000, 1),
            "normal_p99_ms": round(p99(normal) * 1000, 1),
            "malformed_key_lookups": malformed,
            "flood_lookups": key_lookups(base) - before,
        }
