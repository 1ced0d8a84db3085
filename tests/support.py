"""Helpers shared by the test suites: free ports, service URLs, real latam processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
import pytest

IN_CI = bool(os.environ.get("CI"))
POSTGRES_URL = os.environ.get(
    "LATAM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("LATAM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
NATS_URL = os.environ.get("LATAM_TEST_NATS_URL", "nats://127.0.0.1:4222")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


# Which server a broker test gets (one rule, here; tests/pubsub_emulator.py applies it):
# - tests that only use a broker share one: the server named by the environment
#   (LATAM_TEST_NATS_URL, default nats://127.0.0.1:4222; PUBSUB_EMULATOR_HOST when set before
#   the tests start), which they never start or stop, each test on names of its own; without
#   PUBSUB_EMULATOR_HOST the session starts one emulator itself and stops it by its PID;
# - tests that kill or restart a broker start a private one from the local binary
#   (``local_binary``), whatever the environment names, and stop it by its PID;
# - whatever is missing (a server that does not answer, a binary not installed) skips the
#   test on a laptop and fails it under CI (``unavailable``).


def unavailable(message: str) -> NoReturn:
    """Skip on a laptop without the server or binary; fail under CI, where it must be there."""
    if IN_CI:
        pytest.fail(f"{message} (CI requires it)")
    pytest.skip(message)


def require(url: str, default_port: int, what: str) -> None:
    """A shared server named by the environment must answer."""
    if not reachable(url, default_port):
        unavailable(f"{what} is not reachable at {url}; start it or set its URL env var")


def local_binary(path: str, what: str) -> str:
    """The executable of a server a test starts itself (a private broker it may kill)."""
    found = shutil.which(path)
    if found is None:
        unavailable(f"{what} is not installed ({path} not found)")
    return found


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class LatamProcess:
    """A real ``latam`` subprocess with its own environment and log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LatamProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "latam", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> float:
        """SIGTERM and wait; returns how long the exit took."""
        assert self.proc is not None
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return time.monotonic() - started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def latam_env(data_dir: Path, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATAM_")}
    env.update(
        {
            "LATAM_DATA_DIR": str(data_dir),
            "LATAM_LOG_FORMAT": "json",
            "LATAM_WORKER_METRICS_PORT": "0",
            "LATAM_BACKOFF_MIN_SECONDS": "0.2",
            "LATAM_BACKOFF_MAX_SECONDS": "2",
        }
    )
    env.update({f"LATAM_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def wait_http(url: str, *, timeout: float = 30, proc: LatamProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{proc.log()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready")


@contextmanager
def running_serve(data_dir: Path, **settings: Any) -> Iterator[tuple[str, LatamProcess]]:
    """``latam serve`` on a free port; yields its base URL and process."""
    port = free_port()
    env = latam_env(data_dir, port=port, **settings)
    proc = LatamProcess(["serve"], env, data_dir / "serve.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz", proc=proc)
        yield base, proc
    finally:
        proc.terminate()


def create_topic(client: httpx.Client, name: str | None = None) -> int:
    response = client.post("/v1/topics", json={"name": name or unique("topic-")})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def read_all(client: httpx.Client, topic_id: int, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Every stored message of a topic, following cursors."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = client.get(f"/v1/topics/{topic_id}/messages", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


def wait_stored(
    client: httpx.Client, topic_id: int, expected: set[str], timeout: float
) -> list[str]:
    """The ids stored in ``topic_id`` once every id of ``expected`` is among them (or at
    ``timeout``). Waiting for a count instead would end early where messages of refused
    batches were stored too (a broker may keep a publish the API could not confirm)."""
    deadline = time.monotonic() + timeout
    ids: list[str] = []
    while time.monotonic() < deadline:
        ids = [m["id"] for m in read_all(client, topic_id)]
        if expected <= set(ids):
            return ids
        time.sleep(0.3)
    return ids


def wait_for_count(
    client: httpx.Client, topic_id: int, expected: int, *, timeout: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = read_all(client, topic_id)
        if len(items) >= expected:
            return items
        time.sleep(0.2)
    return items
