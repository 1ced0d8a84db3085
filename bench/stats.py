"""Stats reads at size: 100 topics, one of 5,000,000 messages and 99 of 1,000, published
over 30 days and loaded straight into the store (with their rollups, as the worker
writes them); then `wrk` on the hourly stats of the big topic over its 30 days, and on
`/v1/stats`: as deployed, then with no answer kept (``LATAM_STATS_CACHE_BYTES=0``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from bench.common import Figure
from bench.windows import SPAN, START, load, wrk_url


def measure(
    label: str, url: str, data_dir: Path, serve: object, total: int, seconds: int
) -> list[Figure]:
    ids = load(url, data_dir, [total, *([1_000] * 99)])
    since, until = START, START + SPAN + timedelta(days=1)
    hourly = (
        f"/v1/topics/{ids[0]}/stats?bucket=hour"
        f"&since={quote(since.isoformat())}&until={quote(until.isoformat())}"
    )
    figures: list[Figure] = []
    # As deployed (answers kept per stats version: the same calls, repeated, while the
    # topics do not change), then with none kept: every call reads the rollups (a call
    # right after its topic changed costs that and one version lookup more).
    for mode, settings in (("", {}), (", every call read", {"stats_cache_bytes": "0"})):
        with serve(data_dir, database_url=url, **settings) as base:  # type: ignore[operator]
            for name, path in (
                (f"hourly stats, 30 days of {total:,}", hourly),
                ("/v1/stats", "/v1/stats"),
            ):
                rps, _p50, p99, errors = wrk_url(base + path, seconds=seconds)
                if errors:
                    raise RuntimeError(f"{errors} responses to {path} were not 2xx")
                name += mode
                figures.append(Figure(f"Stats reads, {name}, {label}", "requests/s", [rps]))
                figures.append(Figure(f"Stats reads p99, {name}, {label}", "ms", [p99]))
                print(f"  {name}: {rps:,.0f} req/s, p99 {p99:.1f} ms", flush=True)
    return figures
