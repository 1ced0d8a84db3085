"""/metrics answers in the format the scraper asks for (on the API port and on a metrics
port of its own), and in multiprocess mode it sums the processes' CPU and memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from latam import metrics
from latam.api.app import create_app
from latam.bootstrap import build_keys, build_service
from latam.process.lifecycle import serve_metrics
from latam.settings import Settings
from latam.storage import migrate
from tests.support import free_port

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def test_api_metrics_negotiate_openmetrics(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth="off")
    service = build_service(settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    with TestClient(create_app(service, settings, build_keys(settings, service.store))) as client:
        client.get("/v1/topics")
        open_metrics = client.get("/metrics", headers={"Accept": OPENMETRICS})
        text = client.get("/metrics")
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text;")
    assert open_metrics.text.endswith("# EOF\n")
    assert "latam_db_pool_connections" in open_metrics.text
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in text.text
    assert 'latam_db_pool_connections{pool="store",state="in_use"}' in text.text


def test_metrics_port_negotiates_too() -> None:
    port = free_port()
    serve_metrics("127.0.0.1", port, "test")
    url = f"http://127.0.0.1:{port}/metrics"
    open_metrics = httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=5)
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text;")
    assert open_metrics.text.endswith("# EOF\n")
    assert httpx.get(url, timeout=5).headers["content-type"].startswith("text/plain;")


def _values(body: bytes) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name.startswith("process_")
    }


def test_multiprocess_sums_cpu_and_memory_of_the_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process with a file in the directory counts; one that exited does not."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        script = "import os; print(os.getpid())"
        gone = subprocess.run(
            [sys.executable, "-c", script], check=True, capture_output=True, text=True
        )
        for pid in (child.pid, int(gone.stdout)):
            MmapedDict(str(tmp_path / f"counter_{pid}.db")).close()
        alone = _values(metrics.exposition("")[0])
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        shared = _values(metrics.exposition("")[0])
    finally:
        child.kill()
        child.wait()
    assert set(shared) == {"process_cpu_seconds_total", "process_resident_memory_bytes"}
    own, both = alone["process_resident_memory_bytes"], shared["process_resident_memory_bytes"]
    assert own < both < 3 * own  # this process and the sleeping child, nothing more
    assert shared["process_cpu_seconds_total"] >= alone["process_cpu_seconds_total"]
