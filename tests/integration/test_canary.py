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
        listed = client.get("/v1/topics?limit=1000").json()["data"]
        topics = {t["name"]: t["id"] for t in listed}
        assert "latam-canary" in topics
        # Its marked messages are kept a day, not forever.
        assert {t["name"]: t for t in listed}["latam-canary"]["retention_seconds"] == 86_400
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
        done = canary(base, tmp_path, "--rounds", "2", "--interval", "0.1", "--timeout", "3")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    assert all(line.startswith("timeout ") for line in lines), done.stdout
    assert "2 of 2 canary rounds failed" in done.stderr


def test_a_refused_key_and_an_unreachable_api_are_failed_rounds(tmp_path: Path) -> None:
    """Neither stops the canary: each round fails with the reason, and --rounds exits 1."""
    with running(["api"], tmp_path / "api", auth="on") as base:
        refused = canary(base, tmp_path, "--rounds", "2", "--interval", "0.1", "--api-key", "nope")
    assert refused.returncode == 1
    lines = refused.stdout.splitlines()
    assert len(lines) == 2, refused.stdout
    for line in lines:
        assert line.startswith("publish_failed "), line
        assert "401" in line, line
        assert "nope" not in line  # the key is never echoed
    assert "Traceback" not in refused.stderr
    unreachable = canary(f"http://127.0.0.1:{free_port()}", tmp_path, "--rounds", "1")
    assert unreachable.returncode == 1
    assert unreachable.stdout.startswith("publish_failed "), unreachable.stdout
    assert "ConnectError" in unreachable.stdout
    assert "Traceback" not in unreachable.stderr


def test_an_id_token_that_cannot_be_had_fails_rounds_not_the_canary(
    live_server_url: str, tmp_path: Path
) -> None:
    """LATAM_CANARY_ID_TOKEN_AUDIENCE set where no metadata server answers: each round
    fails before its request is sent, and says why."""
    nowhere = f"127.0.0.1:{free_port()}"
    env = latam_env(tmp_path, canary_id_token_audience=live_server_url)
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)  # google-auth's first choice
    env.update(GCE_METADATA_HOST=nowhere, GCE_METADATA_IP=nowhere, GCE_METADATA_TIMEOUT="1")
    done = subprocess.run(
        [sys.executable, "-m", "latam", "canary", "--url", live_server_url, "--rounds", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    assert all(line.startswith("publish_failed ") for line in lines), done.stdout
    assert all("IdTokenError" in line for line in lines), done.stdout
    assert "Traceback" not in done.stderr


def test_a_deleted_canary_topic_is_made_again(live_server_url: str, tmp_path: Path) -> None:
    topic = f"canary-{tmp_path.name}"
    first = canary(live_server_url, tmp_path, "--topic", topic, "--rounds", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    with httpx.Client(base_url=live_server_url) as client:
        ids = {t["name"]: t["id"] for t in client.get("/v1/topics?limit=1000").json()["data"]}
        assert client.delete(f"/v1/topics/{ids[topic]}").status_code == 204
    # One canary process across the deletion: the round after it fails (404), then the
    # topic is made again and rounds succeed.
    port = free_port()
    args = ["canary", "--url", live_server_url, "--topic", topic, "--interval", "0.3"]
    proc = LatamProcess(
        [*args, "--metrics-port", str(port)], latam_env(tmp_path), tmp_path / "c.log"
    )
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if rounds(httpx.get(f"http://127.0.0.1:{port}/metrics").text, "ok") >= 1:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        with httpx.Client(base_url=live_server_url) as client:
            listed = client.get("/v1/topics?limit=1000").json()["data"]
            again = {t["name"]: t["id"] for t in listed}[topic]
            assert again != ids[topic]
            assert client.delete(f"/v1/topics/{again}").status_code == 204
        deadline = time.monotonic() + 30
        ok = rounds(httpx.get(f"http://127.0.0.1:{port}/metrics").text, "ok")
        while time.monotonic() < deadline:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            if rounds(text, "ok") > ok and rounds(text, "publish_failed") >= 1:
                break
            time.sleep(0.2)
        assert rounds(text, "publish_failed") >= 1, text
        assert rounds(text, "ok") > ok, text
    finally:
        proc.terminate()


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
            assert rounds(text, result) >= 0, result  # every series exists from the start
        assert re.search(
            r'latam_canary_last_success_timestamp_seconds\{topic="latam-canary"\} 1\.\d+e\+09', text
        )


def test_serve_refuses_a_canary_interval_the_canary_would_refuse(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "latam", "serve", "--canary-interval", "0.05"],
        env=latam_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--canary-interval: 0 or at least 0.1 seconds" in done.stderr
