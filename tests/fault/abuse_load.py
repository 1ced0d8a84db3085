"""The load of the load-and-abuse test (``test_abuse``), each part in its own process so
none times another's CPU or GIL, bounded by ``--seconds``, printing one JSON line.

``abuse``: heavy readers asking for the largest legal pages and a flood of requests with
made-up keys, each on keep-alive connections, as fast as the API answers; prints counts.
``probe``: one GET every ``--every`` seconds; prints the latencies.

    python -m tests.fault.abuse_load abuse --base URL --topic N --key KEY [--seconds 15]
    python -m tests.fault.abuse_load probe --base URL --path /healthz --fresh
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import socket
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import orjson


class Connection:
    """One keep-alive HTTP/1.1 connection, raw, so the load costs this process little CPU."""

    def __init__(self, base: str) -> None:
        self.parts = urlsplit(base)

    async def __aenter__(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(
            self.parts.hostname, self.parts.port
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        self.writer.close()

    async def get(self, path: str, token: str) -> tuple[str, int]:
        """The status and body size of one GET; the body is read in full."""
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        length = int(found[1]) if found else 0
        await self.reader.readexactly(length)
        return head.split(b" ", 2)[1].decode(), length


async def heavy_reader(base: str, path: str, key: str, until: float, seen: Counter[str]) -> None:
    """Ask for 1,000 rows again and again, reading every byte of each answer; a connection
    the server closes without an answer is counted (``heavy_dropped``) and opened again."""
    while time.monotonic() < until:
        async with Connection(base) as connection:
            while time.monotonic() < until:
                try:
                    status, length = await connection.get(path, key)
                except (asyncio.IncompleteReadError, ConnectionError):
                    seen["heavy_dropped"] += 1
                    break
                seen["heavy_bytes"] += length
                seen[f"heavy_{status}"] += 1


async def flooder(base: str, path: str, until: float, seen: Counter[str]) -> None:
    """Made-up keys, malformed and well-formed by turns, against the heaviest route."""
    async with Connection(base) as connection:
        while time.monotonic() < until:
            if seen["flood_sent"] % 2:
                token = f"lt_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
            else:
                token = f"lt_{secrets.token_urlsafe(24)}"
            seen["flood_sent"] += 1
            status, _ = await connection.get(path, token)
            seen[f"flood_{status}"] += 1


class Prober:
    """GETs in raw HTTP/1.1, so a probe costs this process tens of microseconds and what
    is timed is the API, not the client. ``fresh``: a new connection per probe, as a
    kubelet's or Cloud Run's probe makes (any API process may take it); otherwise one
    keep-alive connection, as a client library keeps."""

    def __init__(self, base: str, token: str | None = None, *, fresh: bool = False) -> None:
        parts = urlsplit(base)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fresh = fresh
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        close = "Connection: close\r\n" if fresh else ""
        self.headers = f"Host: {parts.netloc}\r\n{auth}{close}\r\n"
        self.sock: socket.socket | None = None

    def __call__(self, path: str) -> tuple[int, float]:
        """The status, and the seconds from connecting (or sending) to its last byte."""
        started = time.perf_counter()
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=30)
            self.stream = self.sock.makefile("rb")
        self.sock.sendall(f"GET {path} HTTP/1.1\r\n{self.headers}".encode())
        status = self.stream.readline()
        length = 0
        while (line := self.stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = self.stream.read(length)
        elapsed = time.perf_counter() - started
        if self.fresh or len(body) < length:
            self.close()
        return int(status.split()[1]) if status else 0, elapsed

    def close(self) -> None:
        if self.sock is not None:
            self.stream.close()
            self.sock.close()
            self.sock = None


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Latencies of GETs of ``--path`` every ``--every`` seconds for ``--seconds``, and
    how many answers had each status."""
    prober = Prober(args.base, args.key, fresh=args.fresh)
    if args.start_after:
        # One request first, not measured: on a kept-alive connection it is the key's
        # first use in the API process that serves it. Then measure from --start-after.
        started = time.monotonic()
        prober(args.path)
        time.sleep(max(args.start_after - (time.monotonic() - started), 0))
    until = time.monotonic() + args.seconds
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    while time.monotonic() < until:
        status, elapsed = prober(args.path)
        latencies.append(elapsed)
        statuses[str(status)] += 1
        time.sleep(args.every)
    prober.close()
    return {"latencies": latencies, "statuses": dict(statuses)}


async def main(args: argparse.Namespace) -> dict[str, int]:
    seen: Counter[str] = Counter()
    until = time.monotonic() + args.seconds
    path = f"/v1/topics/{args.topic}/messages?limit=1000"
    tasks = [heavy_reader(args.base, path, args.key, until, seen) for _ in range(args.readers)]
    tasks += [flooder(args.base, path, until, seen) for _ in range(args.flooders)]
    await asyncio.gather(*tasks)
    return dict(seen)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["abuse", "probe"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--key")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--topic", type=int, help="abuse: the topic the heavy readers read")
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--flooders", type=int, default=4)
    parser.add_argument("--path", help="probe: what to GET")
    parser.add_argument("--every", type=float, default=0.01, help="probe: pause (s)")
    parser.add_argument("--fresh", action="store_true", help="probe: a connection each")
    parser.add_argument(
        "--start-after", type=float, default=0.0, help="probe: one request, then measure from"
    )
    args = parser.parse_args()
    found = asyncio.run(main(args)) if args.mode == "abuse" else probe(args)
    sys.stdout.write(orjson.dumps(found).decode() + "\n")
