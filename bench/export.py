"""Streaming export: a 1,000,000-message topic loaded straight into the store (as the
windows part does), then exported whole through `GET /v1/topics/{id}/export`, first as
CSV, then as Parquet, by `latam serve` (one API process and its workers), measuring rows/s
and the peak RSS (the kernel's VmHWM, file-backed pages included) of the API process and
of the workers; the API's peak before the first export is the baseline."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from bench.common import Figure, free_port, latam, latam_env, wait_ready
from bench.windows import load

FORMATS = ("csv", "parquet")


def children(pid: int) -> list[int]:
    """Every process below ``pid`` (the worker processes of ``latam serve``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        for child in map(int, text):
            found += [child, *children(child)]
    return found


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    return int(hwm.split()[1]) / 1024


def export_once(base: str, topic_id: int, fmt: str) -> tuple[int, float]:
    """(bytes, seconds) of one whole export, read and dropped as it arrives."""
    size = 0
    started = time.perf_counter()
    with (
        httpx.Client(base_url=base, timeout=120) as client,
        client.stream("GET", f"/v1/topics/{topic_id}/export", params={"format": fmt}) as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_bytes(1 << 20):
            size += len(chunk)
    return size, time.perf_counter() - started


def measure(label: str, url: str, data_dir: Path, total: int) -> list[Figure]:
    """Load ``total`` messages into the store at ``url``, then export them once per format."""
    [topic_id] = load(url, data_dir, [total])
    figures: list[Figure] = []
    port = free_port()
    env = latam_env(data_dir, port=port, database_url=url, api_workers=1)
    with latam(["serve"], env, data_dir / "serve.log") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        idle = peak_rss_mb(proc.pid)
        print(f"  API peak RSS before exporting: {idle:.0f} MB", flush=True)
        figures.append(Figure(f"Export: API peak RSS before, {label}", "MB", [idle]))
        for fmt in FORMATS:
            size, elapsed = export_once(base, topic_id, fmt)
            print(f"  {fmt}: {total:,} rows, {size / 1e6:,.0f} MB in {elapsed:.1f}s", flush=True)
            figures.append(
                Figure(f"Export {fmt} rate, {total:,} rows, {label}", "rows/s", [total / elapsed])
            )
            # With one API process, `latam serve` runs the API itself; its children are
            # the workers. VmHWM is the peak so far: after CSV, then after Parquet too.
            api = peak_rss_mb(proc.pid)
            worker = max(peak_rss_mb(pid) for pid in children(proc.pid))
            print(f"  peak RSS after {fmt}: API {api:.0f} MB, worker {worker:.0f} MB", flush=True)
            figures.append(Figure(f"Export {fmt} API peak RSS, {label}", "MB", [api]))
            figures.append(Figure(f"Export {fmt} worker peak RSS, {label}", "MB", [worker]))
    return figures
