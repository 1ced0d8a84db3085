"""A private PostgreSQL server for fault tests: started in a temp dir, stopped by them."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import IN_CI, free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        message = f"PostgreSQL server binaries ({name}) are not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found[-1]


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` on a free port; runs as ``postgres`` when we are root."""

    def __init__(self) -> None:
        # Its own directory under /tmp: the postgres user cannot enter pytest's (root, 0700).
        self.root = Path(tempfile.mkdtemp(prefix="latam-pg-"))
        root = self.root
        self.data = root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> PrivatePostgres:
        self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _bin("pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "postgres.log"), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop_if_running(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
