"""Memory: peak RSS of ``latam worker`` while a backlog of queued messages drains."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from bench.common import latam, latam_env, payload
from latam.bootstrap import build_broker, build_store
from latam.domain import OutboundMessage, utcnow
from latam.settings import Settings
from latam.storage import migrate


def fill(data_dir: Path, total: int, topic: str = "memory", **broker_settings: str) -> None:
    """Queue ``total`` messages straight onto the broker (the embedded one unless
    ``broker_settings`` say otherwise), no worker running."""
    settings = Settings.model_validate(
        {"data_dir": data_dir, "sqlite_synchronous": "NORMAL", **broker_settings}
    )
    store = build_store(settings)
    migrate.upgrade(store.engine)
    store.create_topic(topic)
    store.close()
    broker = build_broker(settings)
    now = utcnow()
    for start in range(0, total, 10_000):
        broker.publish(
            [
                OutboundMessage(topic, f"m{i}", orjson.dumps(payload("mem", i)), {}, now)
                for i in range(start, min(start + 10_000, total))
            ]
        )
    broker.close()


def peak_rss_mb(
    data_dir: Path, total: int, timeout: float = 400, **broker_settings: str
) -> tuple[float, float]:
    """(peak RSS in MB from the kernel's VmHWM, seconds to drain ``total``)."""
    store = build_store(Settings(data_dir=data_dir))
    env = latam_env(data_dir, **broker_settings)
    with latam(["worker"], env, data_dir / "worker.log") as proc:
        started = time.perf_counter()
        deadline = started + timeout
        while store.count_messages(1) < total:
            if time.perf_counter() > deadline or proc.poll() is not None:
                raise RuntimeError("the backlog did not drain")
            time.sleep(0.5)
        drained = time.perf_counter() - started
        status = Path(f"/proc/{proc.pid}/status").read_text()
    store.close()
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    return int(hwm.split()[1]) / 1024, drained
