"""Disk full under the embedded mode: ``LATAM_DATA_DIR`` on a small tmpfs is filled up.

Publishing must fail cleanly (503 problem+json, no stack trace, no path), neither SQLite
file may be corrupted, and once space is freed publishing and storing recover without a
restart of ``latam serve``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import IN_CI, create_topic, read_all, running_serve, wait_for_count

SIZE = "64m"
BATCH = 200
pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        # Without CAP_SYS_ADMIN nothing can fill a disk for real: root ignores file modes.
        reason = f"cannot mount a tmpfs here ({mounted.stderr.strip()})"
        if IN_CI and os.geteuid() == 0:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system has no room left."""
    filler = directory / "filler"
    used = subprocess.run(["du", "-ab", str(directory)], capture_output=True, text=True).stdout
    try:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        pytest.fail(f"the disk filled up before the filler was written ({exc}):\n{used}")
    # Unbuffered writes: a buffered file would retry its last block on close and raise there.
    block = b"\0" * 65536
    try:
        while os.write(fd, block):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def publish(client: httpx.Client, topic_id: int, start: int) -> httpx.Response:
    body = {"messages": [{"id": f"m{start + i}", "data": {"i": start + i}} for i in range(BATCH)]}
    return client.post(f"/v1/topics/{topic_id}/messages", json=body)


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_disk_full_refuses_cleanly_and_recovers(small_disk: Path) -> None:
    accepted: list[str] = []
    refused = 0
    with (
        running_serve(small_disk) as (base, proc),
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        topic_id = create_topic(client)
        for start in range(0, 2000, BATCH):
            response = publish(client, topic_id, start)
            assert response.status_code == 202, response.text
            accepted += response.json()["message_ids"]
        filler = fill(small_disk)
        failure = None
        for start in range(2000, 2000 + 100 * BATCH, BATCH):
            response = publish(client, topic_id, start)
            if response.status_code == 202:
                accepted += response.json()["message_ids"]
                continue
            refused += 1
            failure = response
            if refused >= 3:
                break
        assert failure is not None, "publishing never failed on a full disk"
        assert failure.status_code == 503, failure.text
        assert failure.headers["content-type"].startswith("application/problem+json")
        assert "Retry-After" in failure.headers
        assert "Traceback" not in failure.text
        assert str(small_disk) not in failure.text, "the error leaks a path"
        filler.unlink()
        time.sleep(1)
        recovered = None
        for attempt in range(30):
            recovered = publish(client, topic_id, 100_000 + attempt * BATCH)
            if recovered.status_code == 202:
                accepted += recovered.json()["message_ids"]
                break
            time.sleep(1)
        assert recovered is not None
        assert recovered.status_code == 202, f"publishing did not recover: {recovered.text}"
        stored = [m["id"] for m in wait_for_count(client, topic_id, len(accepted), timeout=120)]
        stored = [m["id"] for m in read_all(client, topic_id)]
        assert proc.proc is not None
        assert proc.proc.poll() is None, "latam serve exited"
    checks = {name: integrity(small_disk / name) for name in ("broker.db", "latam.db")}
    print(
        f"embedded-disk-full: accepted={len(accepted)} stored={len(stored)} "
        f"duplicated={len(stored) - len(set(stored))} lost={len(set(accepted) - set(stored))} "
        f"refused_batches={refused} integrity={checks}"
    )
    assert checks == {"broker.db": "ok", "latam.db": "ok"}
    assert len(stored) == len(set(stored)), "a message was stored twice"
    assert set(accepted) <= set(stored), "a message the API accepted was lost"
