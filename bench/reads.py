"""Reads: wrk at 16 connections on /v1/topics/{id}/messages?limit=100 at random cursors."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from latam.domain import encode_cursor

LUA = """
local cursors = {%s}
math.randomseed(os.time())
request = function()
  local c = cursors[math.random(#cursors)]
  return wrk.format("GET", "/v1/topics/%d/messages?limit=100&cursor=" .. c)
end
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def run_wrk(
    base: str, topic_id: int, max_seq: int, *, seconds: int = 15, connections: int = 16
) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, responses that were not 2xx) over random cursors
    within the topic's sequence range."""
    rng = random.Random(42)
    cursors = ",".join(f'"{encode_cursor(topic_id, rng.randrange(max_seq))}"' for _ in range(2000))
    rps, p50, p99, errors = wrk_script(
        base, LUA % (cursors, topic_id), seconds=seconds, connections=connections
    )
    if errors:
        print(f"  wrk saw {errors} responses that were not 2xx")
    return rps, p50, p99, errors


def wrk_script(
    base: str, lua: str, *, seconds: int, connections: int = 16
) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, not-2xx responses) of ``wrk -t2`` running ``lua``."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                script.name,
                base,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        Path(script.name).unlink()
    return parse_wrk(out)


def parse_wrk(out: str) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, responses that were not 2xx) of ``wrk --latency``."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p50, p99, int(non2xx.group(1)) if non2xx else 0
