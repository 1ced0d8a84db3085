"""Freshness: under a steady publish rate, delay from accept (202) to readable."""

from __future__ import annotations

import threading
import time

import httpx

from bench.common import batch_body


def measure(base: str, topic_id: int, *, rate: int = 5000, seconds: int = 15) -> list[float]:
    """Delays in seconds, one per message, from its 202 to its first appearance in a read."""
    per_tick = rate // 50  # 50 batches per second
    accepted: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()
    path = f"/v1/topics/{topic_id}/messages"

    def tail() -> None:
        cursor = None
        with httpx.Client(base_url=base, timeout=30) as client:
            while not done.is_set() or len(seen) < len(accepted):
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                page = client.get(path, params=params).json()
                now = time.perf_counter()
                for message in page["data"]:
                    seen.setdefault(message["id"], now)
                cursor = page["next_cursor"] or cursor
                if not page["data"]:
                    if done.is_set() and time.perf_counter() - stop_at > 30:
                        return
                    time.sleep(0.005)

    stop_at = float("inf")
    tailer = threading.Thread(target=tail, daemon=True)
    tailer.start()
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=base, timeout=30) as client:
        start = time.perf_counter()
        for tick in range(seconds * 50):
            due = start + tick / 50
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            run = f"fresh{topic_id}"
            response = client.post(
                path, content=batch_body(run, tick * per_tick, per_tick), headers=headers
            )
            now = time.perf_counter()
            for message_id in response.json()["message_ids"]:
                accepted[message_id] = now
        stop_at = time.perf_counter()
        achieved = len(accepted) / (stop_at - start)
    done.set()
    tailer.join(60)
    print(f"  offered {rate}/s, achieved {achieved:,.0f}/s, {len(seen)}/{len(accepted)} seen")
    return [seen[m] - accepted[m] for m in accepted if m in seen]
