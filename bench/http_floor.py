"""The HTTP floor of this machine: what `wrk -t2 -c16` measures against a server that
does nothing, so that the read figures' latencies can be judged.

A do-nothing ASGI app (a fixed 2-byte answer) under uvicorn with as many processes as
`latam serve` starts API processes here, on 127.0.0.1, with the load generator on the
same cores. Its requests/s bound what any endpoint can answer; its p99 is the tail that
the machine's scheduler adds once the cores are saturated, before latam does any work.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from bench.common import Figure, uvicorn_app
from bench.windows import wrk_url
from latam.settings import Settings


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


def serve_noop(workers: int) -> AbstractContextManager[str]:
    return uvicorn_app("bench.http_floor:app", workers)


def measure(runs: int, seconds: int) -> list[Figure]:
    workers = Settings().api_processes
    samples = []
    with serve_noop(workers) as base:
        for _ in range(runs):
            samples.append(wrk_url(f"{base}/", seconds=seconds))
            rps, p50, p99, _errors = samples[-1]
            print(f"  do-nothing server: {rps:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.1f} ms")
    label = f"HTTP floor (do-nothing ASGI app, {workers} uvicorn processes)"
    return [
        Figure(f"{label}", "requests/s", [s[0] for s in samples]),
        Figure(f"{label} p50", "ms", [s[1] for s in samples]),
        Figure(f"{label} p99", "ms", [s[2] for s in samples]),
    ]
