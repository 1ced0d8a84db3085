"""Google's Pub/Sub emulator for the tests, by the rule in tests/support.py.

``EMULATOR`` is the one tests share: the emulator at PUBSUB_EMULATOR_HOST when that was set
before the tests started (it must answer; it is never started or stopped here), else one
started on first use on a free port and stopped by its PID when the session ends. Sharing is
safe: each test makes its own topic and subscriptions (unique names) and deletes them.
A test that stops or restarts the emulator takes ``private_emulator()``, one of its own.
Without the binary (or java) the tests skip, and fail in CI."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, local_binary, unavailable

EMULATOR_BIN = os.environ.get(
    "LATAM_TEST_PUBSUB_EMULATOR",
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)
PROJECT = "latam-test"


def answers(host: str) -> bool:
    """The emulator at ``host`` (host:port) answers its HTTP health check (``Ok``)."""
    try:
        return httpx.get(f"http://{host}/", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


class Emulator:
    """One emulator process of our own; ``host`` is what PUBSUB_EMULATOR_HOST must say."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(tempfile.gettempdir()) / f"pubsub-emulator-{os.getpid()}-{self.port}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, port: int = 0) -> str:
        """Start on ``port`` (a free one if 0); its host:port once it answers."""
        binary = local_binary(EMULATOR_BIN, "the Pub/Sub emulator")
        local_binary("java", "java (the Pub/Sub emulator runs on it)")
        self.port = port or free_port()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "--host=127.0.0.1", f"--port={self.port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the JVM is a child of a shell script
            )
        deadline = time.monotonic() + 60
        while not answers(self.host):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"Pub/Sub emulator did not start; see {self.log_path}")
            time.sleep(0.2)
        return self.host

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Stop and start on the same port (the emulator forgets every resource)."""
        port = self.port
        self.stop()
        self.start(port)


class SharedEmulator:
    """The emulator tests share (see the module docstring)."""

    def __init__(self, external: str) -> None:
        self.external = external  # PUBSUB_EMULATOR_HOST as set before the tests started
        self.own = Emulator()

    def ensure(self) -> str:
        """Its host:port, which PUBSUB_EMULATOR_HOST then names; skip/fail without one."""
        if self.external and not answers(self.external):
            unavailable(
                f"the Pub/Sub emulator at PUBSUB_EMULATOR_HOST={self.external} does not answer"
            )
        if not self.external and not self.own.running:
            self.own.start(self.own.port)
        host = self.external or self.own.host
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        return host

    def stop(self) -> None:
        """Stop the emulator the session started, if any (never the one it found)."""
        self.own.stop()


EMULATOR = SharedEmulator(os.environ.get("PUBSUB_EMULATOR_HOST", ""))


@contextmanager
def private_emulator() -> Iterator[Emulator]:
    """An emulator of the caller's own, which it may stop or restart; PUBSUB_EMULATOR_HOST
    names it (here and in the processes started meanwhile) until the block ends."""
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    emulator = Emulator()
    try:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.start()
        yield emulator
    finally:
        emulator.stop()
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous
