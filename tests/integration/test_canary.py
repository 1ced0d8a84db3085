"""The synthetic canary against real latam processes: healthy, a pipeline that accepts
but never stores, a refused key, an unreachable API, and under ``latam serve``."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import LatamProcess, free_port, latam_env, wait_http

pytestmark = pytest.mark.slow


def canary(
    base: str, data_dir: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "latam", "canary", "--url", base, *args],
        env=latam_env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def running(command: list[str], data_dir: Path, **settings: object) -> Iterator[str]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = LatamProcess(command, latam_env(data_dir, port=port, **settings), data_dir / "p.log")
    proc.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc=proc)
        yield base
    finally:
        proc.terminate()


def rounds(text: str, result: str) -> float:
    found = re.search(rf'latam_canary_rounds_total\{{[^}}]*result="{result}"[^}}]*\}} (\S+)', text)
    return float(found.group(1)) if found else -1


def test_rounds_against_a_healthy_api_succeed(live_server_url: str, tmp_path: Path) -> None:
    done = canary(live_server_url, tmp_path, "--rounds", "3", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    assert all(line.startswith("ok ") for line in lines), done.stdout
    with httpx.Client(base_url=live_server_url) as client:
        topics = {t["name"]: t["id"] for t in client.get("/v1/topics?limit=1000").json()["data"]}
        assert "latam-canary" in topics
        page = client.get(f"/v1/topics/{topics['latam-canary']}/messages").json()["data"]
        assert all(item["data"]["canary"] is True for item in page)
        assert len(page) >= 3


def test_an_api_that_accepts_but_never_stores_times_out(tmp_path: Path) -> None:
    """`latam api` alone: publishing answers 202, nothing stores, every round times out."""
    data_dir = tmp_path / "api"
    data_dir.mkdir()
    migrate = [sys.executable, "-m", "latam", "migrate"]
    subprocess.run(migrate, env=latam_env(data_dir), check=True, capture_output=True, timeout=60)
    with running(["api"], data_dir) as base:
        done = canary(base, tmp_path, "--rounds", "2", "--interval", "0.1", "--timeout", "1")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        line for line in done.stdout.splitlines() if line.startswith("timeout ")
    ]
    assert len(done.stdout.splitlines()) == 2
    assert "2 of 2 canary rounds failed" in done.stderr


def test_a_refused_key_and_an_unreachable_api_are_one_line_errors(tmp_path: Path) -> None:
    with running(["api"], tmp_path / "api", auth="on") as base:
        refused = canary(base, tmp_path, "--rounds", "1", "--api-key", "lt_nope")
    assert refused.returncode == 1
    assert "--topic: cannot find or create 'latam-canary'" in refused.stderr
    assert "401" in refused.stderr
    assert "Traceback" not in refused.stderr
    unreachable = canary(f"http://127.0.0.1:{free_port()}", tmp_path, "--rounds", "1")
    assert unreachable.returncode == 1
    assert "--url: cannot reach" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_serve_runs_the_canary_and_exports_its_rounds(tmp_path: Path) -> None:
    with running(["serve", "--canary-interval", "0.3"], tmp_path) as base:
        deadline = time.monotonic() + 45
        text = ""
        while time.monotonic() < deadline:
            text = httpx.get(f"{base}/metrics", timeout=5).text
            if rounds(text, "ok") >= 2:
                break
            time.sleep(0.3)
        assert rounds(text, "ok") >= 2, text[-3000:]
        for result in ("publish_failed", "read_failed", "timeout"):
            assert rounds(text, result) == 0, result
        assert re.search(
            r'latam_canary_last_success_timestamp_seconds\{topic="latam-canary"\} 1\.\d+e\+09', text
        )
