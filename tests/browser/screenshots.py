"""``make screenshots``: docs/console-overview.png and docs/console-topic.png.

Starts ``latam serve`` on a temporary data directory, loads a small airline data set
(flights and their delays) through the HTTP API, and photographs the console at 1280 x 720
in headless Chromium (``LATAM_TEST_CHROMIUM``, default /usr/bin/chromium).

    PYTHONPATH=. .venv/bin/python -m tests.browser.screenshots [--out docs]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.contract.brokers import SqliteHarness
from tests.support import running_serve

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LATAM_TEST_CHROMIUM", "/usr/bin/chromium")
ROUTES = (("SCL", "LIM"), ("SCL", "GRU"), ("LIM", "BOG"), ("GRU", "MIA"), ("SCL", "MAD"))
STATUSES = ("SCHEDULED", "BOARDING", "DEPARTED", "ARRIVED", "DELAYED")
CAUSES = ("weather", "crew", "technical", "air traffic", "late inbound")
MAX_BYTES = 300 * 1024
OVERVIEW_SECONDS = 5  # the overview's refresh: its rates are known from the first one on
DELAY = {
    "type": "object",
    "required": ["flight", "delay_min"],
    "properties": {"flight": {"type": "string"}, "delay_min": {"type": "integer"}},
}


def flights(rng: random.Random, count: int) -> list[dict[str, Any]]:
    start = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    out = []
    for i in range(count):
        origin, destination = ROUTES[i % len(ROUTES)]
        scheduled = start + timedelta(minutes=17 * i)
        out.append(
            {
                "id": f"LA{800 + i}-2026-12-03",
                "data": {
                    "flight": f"LA{800 + i}",
                    "origin": origin,
                    "destination": destination,
                    "scheduled": scheduled.isoformat().replace("+00:00", "Z"),
                    "status": STATUSES[rng.randrange(len(STATUSES))],
                    "gate": f"B{rng.randrange(1, 40)}",
                    "passengers": rng.randrange(90, 174),
                },
                "attributes": {"source": "ops"},
            }
        )
    return out


def delays(rng: random.Random, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"delay-LA{800 + i}",
            "data": {
                "flight": f"LA{800 + i}",
                "delay_min": rng.choice((5, 12, 18, 25, 40, 75)),
                "cause": CAUSES[rng.randrange(len(CAUSES))],
            },
        }
        for i in range(0, count, 3)
    ]


def load(api: httpx.Client, data_dir: Path) -> int:
    """The demo topics and messages, and two dead letters (a delay report whose minutes
    are text, and a message for a topic that does not exist, both from a producer writing
    straight onto the embedded queue); returns the flights topic's id."""
    rng = random.Random(2026)
    ids = {}
    for name in ("flights", "delays", "gate-changes"):
        response = api.post("/v1/topics", json={"name": name})
        response.raise_for_status()
        ids[name] = int(response.json()["id"])
    batches = {"flights": flights(rng, 24), "delays": delays(rng, 24)}
    for name, messages in batches.items():
        response = api.post(f"/v1/topics/{ids[name]}/messages", json={"messages": messages})
        response.raise_for_status()
    api.put(f"/v1/topics/{ids['delays']}/schema", json={"schema": DELAY}).raise_for_status()
    producer = SqliteHarness(data_dir / "broker.db")
    producer.publish_raw(
        b'{"flight": "LA812", "delay_min": "twenty", "cause": "crew"}',
        {"topic": "delays", "message_id": "delay-LA812-late"},
    )
    producer.publish_raw(b'{"flight": "LA950", "gate": "C4"}', {"topic": "arrivals"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = api.get(f"/v1/topics/{ids['flights']}/messages", params={"limit": 1000}).json()
        letters = api.get("/v1/dead-letters").json()["data"]
        if len(page["data"]) >= 24 and len(letters) >= 2:
            return ids["flights"]
        time.sleep(0.2)
    raise TimeoutError("the demo messages were not stored within 30 s")


@contextmanager
def trickle(api: httpx.Client, topic_id: int) -> Iterator[None]:
    """Flight status updates, five a second, while the pictures are taken: the overview
    shows a rate and a freshness, the topic's live tail shows them arriving."""
    stop = threading.Event()
    rng = random.Random(7)

    def publish() -> None:
        for n in itertools.count():
            if stop.wait(0.2):
                return
            update = flights(rng, 24)[n % 24]
            update["id"] = f"{update['id']}-update-{n}"
            api.post(f"/v1/topics/{topic_id}/messages", json=update).raise_for_status()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def photograph(base: str, api: httpx.Client, topic_id: int, out: Path) -> list[Path]:
    """The overview, then the flights topic with its updates arriving in the live tail
    (which shows what is stored after the page opened)."""
    from playwright.sync_api import sync_playwright

    overview, topic = out / "console-overview.png", out / "console-topic.png"
    with sync_playwright() as playwright, trickle(api, topic_id):
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 720})
        page.goto("/console")
        page.wait_for_timeout(OVERVIEW_SECONDS * 1000 + 1000)
        page.screenshot(path=str(overview))
        page.goto(f"/console/topics/{topic_id}")
        page.locator("#tail [data-message-id]").nth(3).wait_for()
        # From the activity chart down to the tail, as far as the window reaches.
        page.evaluate("document.getElementById('chart-h').scrollIntoView()")
        page.screenshot(path=str(topic))
        browser.close()
    return [overview, topic]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_serve(Path(tmp), api_workers=1, worker_processes=1) as (base, _proc),
        httpx.Client(base_url=base, timeout=10) as api,
    ):
        paths = photograph(base, api, load(api, Path(tmp)), args.out)
    for path in paths:
        size = path.stat().st_size
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {size:,} bytes")
        if size > MAX_BYTES:
            raise SystemExit(f"{path} is larger than {MAX_BYTES:,} bytes")


if __name__ == "__main__":
    main()
