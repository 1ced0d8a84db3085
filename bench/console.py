"""The web console's cost to the API: p99 of ``GET /v1/topics/{id}/messages?limit=100``
(wrk, 16 connections, random cursors, as the reads part) on one ``latam serve``, with the
console idle, with open consoles polling as browsers do, and with console pages loaded
back to back; the three alternate, so drift on the machine spreads over all of them.

- open consoles: ``TABS`` topic pages polling their live tail every 2 s (the page's
  ``hx-trigger``) and as many overviews refreshing every 5 s, each tab loading its
  page first;
- back to back: one client loading the topic page (figures, chart, schema, a page of
  messages) again as soon as the last one arrived: the most one browser can ask.

"Console idle" is also the API without a console: the console adds no middleware and no
background task, its routes come after the API's (a request to /v1 matches before them),
and the one per-request cost is a prefix test on the path in ``StatusHeaders``.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from bench.common import Figure
from bench.ingest import create_topic, publish_and_wait
from bench.reads import run_wrk

TABS = 10
TAIL_SECONDS = 2.0
OVERVIEW_SECONDS = 5.0
SCENARIOS = ("console idle", f"{TABS} + {TABS} open consoles", "console pages back to back")
POLLER = re.compile(r'id="tail-poller" hx-get="([^"]+)"')


class ConsoleLoad:
    """Console requests from background threads; counts them and their latencies."""

    def __init__(self, base: str, topic_id: int) -> None:
        self.base, self.topic_id = base, topic_id
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures = 0
        self._lock = threading.Lock()

    def get(self, client: httpx.Client, path: str) -> str:
        started = time.perf_counter()
        response = client.get(path)
        with self._lock:
            self.latencies.append(time.perf_counter() - started)
            self.failures += response.status_code != 200
        return response.text

    def tail_tab(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            page = self.get(client, f"/console/topics/{self.topic_id}")
            found = POLLER.search(page)
            poll = found.group(1).replace("&amp;", "&") if found else None
            while poll and not self.stop.wait(TAIL_SECONDS):
                found = POLLER.search(self.get(client, poll))
                poll = found.group(1).replace("&amp;", "&") if found else poll

    def overview_tab(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            self.get(client, "/console")
            while not self.stop.wait(OVERVIEW_SECONDS):
                self.get(client, "/console/overview")

    def back_to_back(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                self.get(client, f"/console/topics/{self.topic_id}")

    def loops(self, scenario: str) -> list[Callable[[], None]]:
        if scenario == SCENARIOS[1]:
            return [self.tail_tab] * TABS + [self.overview_tab] * TABS
        if scenario == SCENARIOS[2]:
            return [self.back_to_back]
        return []

    @contextmanager
    def running(self, *loops: Callable[[], None]) -> Iterator[ConsoleLoad]:
        threads = [threading.Thread(target=loop, daemon=True) for loop in loops]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(30)


def measure(base: str, runs: int, total: int, seconds: int) -> list[Figure]:
    """Figures of the three scenarios on a topic of ``total`` messages, with wrk at 16
    connections (the API saturated, as in the reads part) and at 2 (below saturation)."""
    topic_id = create_topic(base, f"bench-console-{uuid.uuid4().hex[:8]}")
    publish_and_wait(base, topic_id, "console", total)
    run_wrk(base, topic_id, total, seconds=seconds)  # warm-up, not counted: page cache, pools
    out: list[Figure] = []
    for connections in (16, 2):
        samples: dict[str, list[tuple[float, float, float, int]]] = {}
        rates: dict[str, list[float]] = {}
        p50s: dict[str, list[float]] = {}
        for _ in range(runs):
            for scenario in SCENARIOS:
                label = f"{scenario}, {connections} connections"
                load = ConsoleLoad(base, topic_id)
                loops = load.loops(scenario)
                with load.running(*loops):
                    time.sleep(1 if loops else 0)  # the tabs have loaded their pages
                    started, before = time.monotonic(), len(load.latencies)
                    sample = run_wrk(
                        base, topic_id, total, seconds=seconds, connections=connections
                    )
                    during = load.latencies[before:]
                    elapsed = time.monotonic() - started
                samples.setdefault(label, []).append(sample)
                if loops:
                    rates.setdefault(label, []).append(len(during) / elapsed)
                    p50s.setdefault(label, []).append(statistics.median(during) * 1000)
                if load.failures:
                    print(f"  {label}: {load.failures} console requests were not 200")
                print(f"  {label}: reads p99 {sample[2]:.1f} ms")
        out += figures(samples, rates, p50s)
    return out


def figures(
    samples: dict[str, list[tuple[float, float, float, int]]],
    console_rates: dict[str, list[float]],
    console_p50: dict[str, list[float]],
) -> list[Figure]:
    idle = next(runs for label, runs in samples.items() if label.startswith(SCENARIOS[0]))
    out: list[Figure] = []
    for label, runs in samples.items():
        out.append(Figure(f"Reads p99, {label}", "ms", [s[2] for s in runs]))
        out.append(Figure(f"Reads, {label}", "requests/s", [s[0] for s in runs]))
        if runs is not idle:
            added = [s[2] - i[2] for s, i in zip(runs, idle, strict=True)]
            out.append(Figure(f"Reads p99 added, {label}", "ms", added))
            out.append(Figure(f"Console requests, {label}", "requests/s", console_rates[label]))
            out.append(Figure(f"Console request p50, {label}", "ms", console_p50[label]))
        out.append(Figure(f"Reads not 2xx, {label}", "responses", [float(s[3]) for s in runs]))
    return out
