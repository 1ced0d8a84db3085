"""A stand-in Prometheus for tests: a real HTTP server on 127.0.0.1 answering
``GET /api/v1/query`` the way Prometheus does, with answers set per query."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0  # seconds before answering
    content_type: str = "application/json"


def vector(*values: float | str) -> Reply:
    """A successful instant-vector answer with one series per value."""
    result = [
        {"metric": {"series": str(i)}, "value": [time.time(), str(value)]}
        for i, value in enumerate(values)
    ]
    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
    return Reply(body=json.dumps(body).encode())


def error(status: int = 400, kind: str = "bad_data") -> Reply:
    body = {"status": "error", "errorType": kind, "error": "parse error at char 3: secret detail"}
    return Reply(status, json.dumps(body).encode())


class FakePrometheus:
    """``answers`` maps a query's exact text to its ``Reply``; any other query gets
    ``default`` (no series). ``queries`` and ``headers`` record what was asked."""

    def __init__(self) -> None:
        self.answers: dict[str, Reply] = {}
        self.default = vector()
        self.queries: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reply(self, query: str) -> Reply:
        with self._lock:
            self.queries.append(query)
            return self.answers.get(query, self.default)

    @contextmanager
    def running(self) -> Iterator[FakePrometheus]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                if parts.path != "/api/v1/query":
                    self.send_error(404)
                    return
                query = parse_qs(parts.query).get("query", [""])[0]
                answer = fake.reply(query)
                time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
