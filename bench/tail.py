"""Live tail delay: subscribers on ``/v1/topics/{id}/stream`` while a steady rate is
published; the delay of each event is from its ``ingested_at`` (stored) to its arrival.

The subscribers run in a process of their own, on one asyncio loop over raw sockets
that pull only ``ingested_at`` out of each event, so that the clients' Python does not
take the server's CPU time under the same GIL or add its own parsing to the delay.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import time
from datetime import datetime
from multiprocessing.connection import Connection

import httpx

from bench.common import batch_body

INGESTED = re.compile(rb'"ingested_at":"([^"]+)"')


async def _subscriber(port: int, topic_id: int, expected: int, delays: list[float]) -> int:
    """Read the stream until ``expected`` events; returns how many arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    path = f"/v1/topics/{topic_id}/stream"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    buffer, seen = b"", 0
    try:
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"the stream was refused: {status.decode().strip()}")
        while seen < expected:
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), 30)
            except TimeoutError:
                break  # counted as missing events
            if not chunk:
                break
            now = time.time()
            buffer += chunk
            cut = buffer.rfind(b"\n\n")
            if cut < 0:
                continue
            complete, buffer = buffer[: cut + 2], buffer[cut + 2 :]
            for stamp in INGESTED.findall(complete):
                delays.append(now - datetime.fromisoformat(stamp.decode()).timestamp())
                seen += 1
    finally:
        writer.close()
    return seen


def _subscribe(port: int, topic_id: int, count: int, expected: int, out: Connection) -> None:
    """In a child process: ``count`` subscribers; sends (delays, events per subscriber)."""

    async def run() -> tuple[list[float], list[int]]:
        delays: list[float] = []
        tasks = [_subscriber(port, topic_id, expected, delays) for _ in range(count)]
        return delays, list(await asyncio.gather(*tasks))

    out.send(asyncio.run(run()))


def measure(
    base: str, topic_id: int, *, subscribers: int = 50, rate: int = 1000, seconds: int = 20
) -> tuple[list[float], list[int], float]:
    """Delays (s) of every event at every subscriber, events each received, rate achieved."""
    ticks_per_second = 20
    per_tick = rate // ticks_per_second
    total = per_tick * ticks_per_second * seconds
    port = int(base.rsplit(":", 1)[1])
    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(
        target=_subscribe, args=(port, topic_id, subscribers, total, send), daemon=True
    )
    child.start()
    time.sleep(3)  # every subscriber connected and at the tail before the first message
    path = f"/v1/topics/{topic_id}/messages"
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=base, timeout=30) as client:
        start = time.perf_counter()
        for tick in range(seconds * ticks_per_second):
            if (wait := start + tick / ticks_per_second - time.perf_counter()) > 0:
                time.sleep(wait)
            body = batch_body(f"tail{topic_id}", tick * per_tick, per_tick)
            client.post(path, content=body, headers=headers).raise_for_status()
        achieved = total / (time.perf_counter() - start)
    if not receive.poll(120):
        child.kill()
        raise TimeoutError("the subscribers did not finish")
    delays, counts = receive.recv()
    child.join(10)
    return delays, counts, achieved
