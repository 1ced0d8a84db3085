"""The cost of a data contract on E2E ingest: the same 20-field flight events into a topic
without a schema and into one that enforces docs/examples/flight-event.schema.json
(checked by the API at publish and again by the worker), alternating, on one server."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from bench.common import ROOT, Figure
from bench.ingest import create_topic, publish_and_wait

SCHEMA = ROOT / "docs" / "examples" / "flight-event.schema.json"
STATUSES = ("SCHEDULED", "BOARDING", "DEPARTED", "ARRIVED", "DELAYED", "CANCELLED", "DIVERTED")


def flight_event(run: str, i: int) -> dict[str, Any]:
    """A realistic event: 20 fields, ~380 bytes, valid under the example schema."""
    return {
        "event_id": f"{run}-{i}",
        "flight": f"LA{i % 9999 + 1}",
        "carrier": "LA",
        "origin": "SCL",
        "destination": ("LIM", "GRU", "BOG", "MIA")[i % 4],
        "scheduled": "2026-12-03T14:05:00Z",
        "actual": "2026-12-03T14:17:00Z" if i % 3 else None,
        "delay_min": i % 90,
        "status": STATUSES[i % len(STATUSES)],
        "gate": f"B{i % 40}",
        "terminal": "1",
        "aircraft": "A320neo",
        "tail_number": f"CC-B{i % 100:02d}",
        "seats": 174,
        "passengers": 100 + i % 74,
        "crew": 6,
        "fuel_kg": 5400.5 + i % 100,
        "distance_km": 2456.0,
        "codeshare": ["IB1234", "QF300"] if i % 2 else [],
        "source": "ops",
    }


def measure(base: str, runs: int, total: int) -> list[Figure]:
    schema = orjson.loads(SCHEMA.read_bytes())
    without, enforced = [], []
    for run in range(runs):
        for rates, contract in ((without, False), (enforced, True)):
            topic_id = create_topic(base, f"bench-contract-{uuid.uuid4().hex[:8]}")
            if contract:
                put = httpx.put(
                    f"{base}/v1/topics/{topic_id}/schema", json={"schema": schema}, timeout=30
                )
                put.raise_for_status()
            tag = f"c{run}{int(contract)}"
            elapsed = publish_and_wait(base, topic_id, tag, total, make=flight_event)
            rates.append(total / elapsed)
    ratio = [100 * e / w for e, w in zip(enforced, without, strict=True)]
    return [
        Figure("E2E ingest, 20-field events, no schema", "messages/s", without),
        Figure("E2E ingest, 20-field events, schema enforced", "messages/s", enforced),
        Figure("E2E ingest with a schema vs without", "%", ratio),
    ]
