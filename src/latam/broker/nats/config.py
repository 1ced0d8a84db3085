"""Where a NATS broker lives: parsed from ``nats://HOST:PORT/STREAM``.

The URL names the server and the JetStream stream; the dead-letter stream is
``<STREAM>_DLQ`` and the durable consumer ``<STREAM>_worker``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_STREAM_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """Server URL, stream names, subject and durable consumer of one deployment."""

    server: str
    stream: str

    @property
    def subject(self) -> str:
        """Where latam publishes; plain producers may also use ``<STREAM>.<anything>``."""
        return self.stream

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.stream}_DLQ"

    @property
    def consumer(self) -> str:
        return f"{self.stream}_worker"


def parse_nats_url(url: str) -> NatsConfig:
    """``nats://HOST:PORT/STREAM``; raises ``ValueError`` saying what is wrong."""
    parts = urlsplit(url)
    stream = parts.path.strip("/")
    if parts.scheme not in {"nats", "tls"} or not parts.hostname or not _STREAM_NAME.match(stream):
        raise ValueError("expected nats://HOST:PORT/STREAM (stream: letters, digits, _ and -)")
    return NatsConfig(server=f"{parts.scheme}://{parts.netloc}", stream=stream)
