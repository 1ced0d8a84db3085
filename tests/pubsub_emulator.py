"""Google's Pub/Sub emulator for the test session: started on first use on a free port,
stopped by PID when the session ends. Without the binary the tests skip (fail in CI)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import IN_CI, free_port, reachable

EMULATOR_BIN = os.environ.get(
    "LATAM_TEST_PUBSUB_EMULATOR",
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)
PROJECT = "latam-test"


class Emulator:
    """One emulator process; ``host`` is what PUBSUB_EMULATOR_HOST must say."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = Path(tempfile.gettempdir()) / f"pubsub-emulator-{os.getpid()}.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ensure(self) -> str:
        """Start once (or skip/fail when the emulator is not installed); its host:port."""
        if self.proc is not None and self.proc.poll() is None:
            return self.host
        if shutil.which(EMULATOR_BIN) is None and not Path(EMULATOR_BIN).exists():
            message = f"Pub/Sub emulator not installed at {EMULATOR_BIN}"
            if IN_CI:
                pytest.fail(f"{message} (CI requires it)")
            pytest.skip(message)
        self.start(self.port or free_port())
        return self.host

    def start(self, port: int) -> None:
        self.port = port
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [EMULATOR_BIN, "--host=127.0.0.1", f"--port={port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the JVM is a child of a shell script
            )
        deadline = time.monotonic() + 60
        while not reachable(f"http://{self.host}", port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"Pub/Sub emulator did not start; see {self.log_path}")
            time.sleep(0.2)
        os.environ["PUBSUB_EMULATOR_HOST"] = self.host

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


EMULATOR = Emulator()
