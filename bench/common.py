"""Shared pieces of the benchmark suite: processes, payloads, statistics."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD_PAD = "x" * 150  # with the other fields a message's data is ~200 bytes


def analyze(url: str) -> None:
    """Planner statistics of the messages table on PostgreSQL and MySQL/MariaDB, as a
    production server keeps them (autovacuum; InnoDB's automatic recalculation). This
    machine's PostgreSQL runs with autovacuum off: after a bulk load its planner would
    guess, and may pick a partial field index and a sort for an unfiltered page."""
    from sqlalchemy import create_engine

    if url.startswith("sqlite"):
        return
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            table = "messages" if url.startswith("postgresql") else "TABLE messages"
            conn.exec_driver_sql(f"ANALYZE {table}")
    finally:
        engine.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def payload(run: str, i: int) -> dict[str, Any]:
    return {"run": run, "seq": i, "flight": f"LA{i % 9999:04d}", "pad": PAYLOAD_PAD}


def batch_body(
    run: str, start: int, size: int, make: Callable[[str, int], dict[str, Any]] = payload
) -> bytes:
    items = [{"id": f"{run}-{i}", "data": make(run, i)} for i in range(start, start + size)]
    return orjson.dumps({"messages": items})


@dataclass
class Figure:
    name: str
    unit: str
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def row(self) -> str:
        lo, hi = min(self.samples), max(self.samples)
        spread = f"{fmt(lo)} to {fmt(hi)}"
        runs = len(self.samples)
        return f"| {self.name} | {fmt(self.median)} | {spread} | {self.unit} | {runs} |"


def fmt(value: float) -> str:
    if value == int(value) and abs(value) < 100:
        return str(int(value))
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def latam_env(data_dir: Path, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATAM_")}
    env["LATAM_DATA_DIR"] = str(data_dir)
    env["LATAM_LOG_LEVEL"] = "WARNING"
    env["LATAM_WORKER_METRICS_PORT"] = "0"
    env.update({f"LATAM_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextmanager
def latam(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "latam", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base} not ready")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


@contextmanager
def uvicorn_app(
    app: str, workers: int, *, probe: str = "/", env: dict[str, str] | None = None
) -> Iterator[str]:
    """``app`` ("module:attribute") under uvicorn on a free port of 127.0.0.1, in
    ``workers`` processes; yields its base URL once ``probe`` answers 2xx."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--host", "127.0.0.1"]
    command += ["--workers", str(workers), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + probe, timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{app} did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(30)
