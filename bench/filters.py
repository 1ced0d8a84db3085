"""Filtered reads: a 200,000-message topic (9,999 flights, about 20 messages each) loaded
straight into the store, then `wrk` on `GET /v1/topics/{id}/messages?data.flight=eq.LA…`
at random flights, first without an index on the field and then after
`latam index create TOPIC data.flight`, in the same run; plus one aggregation
(average per origin over the topic) timed sequentially."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import Figure, latam_env
from bench.reads import wrk_script
from bench.windows import load

RUNS = 3  # wrk runs of the indexed reads

LUA = """
local flights = {%s}
math.randomseed(os.time())
request = function()
  local f = flights[math.random(#flights)]
  return wrk.format("GET", "/v1/topics/%d/messages?data.flight=eq." .. f)
end
"""


def wrk_flights(base: str, topic_id: int, *, seconds: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, not-2xx) of ``wrk -t2 -c16`` at random flights."""
    rng = random.Random(7)
    flights = ",".join(f'"LA{rng.randrange(9999):04d}"' for _ in range(2000))
    return wrk_script(base, LUA % (flights, topic_id), seconds=seconds)


def create_index(url: str, data_dir: Path, topic_id: int) -> float:
    """``latam index create`` on the topic's ``data.flight``; the seconds it took."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "latam", "index", "create", str(topic_id), "data.flight"],
        env=latam_env(data_dir, database_url=url),
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return time.monotonic() - started


def measure(
    label: str, url: str, data_dir: Path, serve: object, total: int, seconds: int
) -> list[Figure]:
    (topic_id,) = load(url, data_dir, [total])
    figures: list[Figure] = []
    for indexed in (False, True):
        if indexed:
            took = create_index(url, data_dir, topic_id)
            figures.append(Figure(f"Field index build, {total:,} messages, {label}", "s", [took]))
        state = "indexed" if indexed else "not indexed"
        with serve(data_dir, database_url=url) as base:  # type: ignore[operator]
            # Indexed: three runs, reported as their median (this machine's speed moves
            # by more than 10 % between runs); unindexed, one is plenty.
            rates, tails = [], []
            for _ in range(RUNS if indexed else 1):
                rps, _p50, p99, errors = wrk_flights(base, topic_id, seconds=seconds)
                if errors:
                    raise RuntimeError(f"{errors} filtered reads were not 2xx")
                rates.append(rps)
                tails.append(p99)
                print(f"  filtered reads, {state}: {rps:,.0f} req/s, p99 {p99:.1f} ms", flush=True)
            figures.append(Figure(f"Filtered reads, {state}, {label}", "requests/s", rates))
            figures.append(Figure(f"Filtered reads p99, {state}, {label}", "ms", tails))
            if indexed:
                figures.append(aggregation(base, topic_id, label, total))
    return figures


def aggregation(base: str, topic_id: int, label: str, total: int) -> Figure:
    """The median of five sequential aggregations over the whole topic."""
    path = f"/v1/topics/{topic_id}/aggregate?group_by=data.flight&metrics=count,max:data.seq"
    path += "&data.flight=lt.LA0500"
    took = []
    for _ in range(5):
        started = time.monotonic()
        response = httpx.get(base + path, timeout=120)
        response.raise_for_status()
        took.append((time.monotonic() - started) * 1000)
    took.sort()
    print(f"  aggregation: {took[2]:.0f} ms", flush=True)
    return Figure(f"Aggregation, 500 groups of {total:,} messages, {label}", "ms", [took[2]])
