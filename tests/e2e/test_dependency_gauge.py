"""``latam_dependency_up`` is current in an API process that nobody asks for /readyz: Cloud
Run's probes and the uptime check call /healthz, so the gauge must not depend on /readyz."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import LatamProcess, free_port, latam_env, wait_http


def dependency_up(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return {
        sample.labels["dependency"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "latam_dependency_up"
    }


def test_api_checks_its_dependencies_without_readyz(tmp_path: Path) -> None:
    port = free_port()
    env = latam_env(tmp_path, port=port)
    # `latam api` alone does not migrate (before that its store check reads 0, correctly).
    subprocess.run([sys.executable, "-m", "latam", "migrate"], env=env, check=True, timeout=60)
    proc = LatamProcess(["api"], env, tmp_path / "api.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc=proc)
        deadline = time.monotonic() + 20
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            seen = dependency_up(base)
            if seen == {"store": 1.0, "broker": 1.0}:
                break
            time.sleep(0.5)
        assert seen == {"store": 1.0, "broker": 1.0}, proc.log()[-2000:]
    finally:
        proc.terminate()
