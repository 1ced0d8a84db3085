"""One trace id links the HTTP publish to the worker's store write; logs carry it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from latam.api.app import create_app
from latam.bootstrap import build_keys, build_service
from latam.logs import JsonFormatter
from latam.settings import Settings
from latam.storage import migrate
from latam.tracing import incoming_traceparent
from latam.worker import Worker

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(sdk)


def test_publish_and_store_share_the_trace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, gcp_project="demo")
    service = build_service(settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    EXPORTER.clear()
    with TestClient(create_app(service, settings, build_keys(settings, service.store))) as client:
        topic = client.post("/v1/topics", json={"name": "traced"}).json()["id"]
        with caplog.at_level(logging.INFO, logger="latam.access"):
            response = client.post(
                f"/v1/topics/{topic}/messages",
                json={"data": {"secret_payload": "do-not-log"}},
                headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
            )
        assert response.status_code == 202
    worker = Worker(store=service.store, broker=service.broker)
    consumer = threading.Thread(target=worker.run)
    consumer.start()
    deadline = time.monotonic() + 10
    while not service.store.list_messages(topic, limit=1) and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.stop.set()
    consumer.join(10)
    spans = {span.name: span for span in EXPORTER.get_finished_spans()}
    for name in ("latam.http", "latam.publish", "latam.store_write"):
        assert f"{spans[name].context.trace_id:032x}" == TRACE_ID, name
    assert spans["latam.store_write"].parent is not None
    access = [
        r for r in caplog.records if r.name == "latam.access" and "messages" in r.getMessage()
    ]
    line = orjson.loads(JsonFormatter().format(access[-1]))
    assert line["logging.googleapis.com/trace"] == f"projects/demo/traces/{TRACE_ID}"
    assert line["severity"] == "INFO"
    assert line["request_id"]
    assert "do-not-log" not in str(line)
    stored = service.store.list_messages(topic, limit=10)
    assert orjson.loads(stored[0].attributes) == {}  # the envelope's traceparent is not data


def test_cloud_run_trace_header_is_translated() -> None:
    header = {"x-cloud-trace-context": f"{TRACE_ID}/1;o=1"}
    assert incoming_traceparent(header) == f"00-{TRACE_ID}-0000000000000001-01"
    assert incoming_traceparent({"x-cloud-trace-context": "garbage"}) is None
