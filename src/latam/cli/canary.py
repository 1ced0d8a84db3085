"""``latam canary``: the synthetic canary, a marked message published and read back
through the API every interval (``latam.canary``)."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import click

from latam.cli.common import (
    api_key_option,
    api_url_option,
    fail,
    load_settings,
    ranged_option,
    setup,
)


@click.command()
@api_url_option
@click.option("--topic", default="latam-canary", show_default=True, help="The canary's topic.")
@ranged_option(
    "--interval",
    click.FloatRange(0.1, 3600),
    30.0,
    "Seconds from one round's start to the next.",
)
@ranged_option(
    "--timeout",
    click.FloatRange(0.1, 600),
    10.0,
    "Seconds a round may take, publish and read-back together.",
)
@ranged_option(
    "--rounds", click.IntRange(0), 0, "Rounds to run, then exit 1 if any failed (0: until SIGTERM)."
)
@ranged_option(
    "--metrics-port",
    click.IntRange(0, 65535),
    0,
    "Serve the canary's /metrics on this port (0: none; under `latam serve` its metrics are"
    " on the API's /metrics).",
)
@api_key_option
def canary(
    url: str | None,
    topic: str,
    interval: float,
    timeout: float,
    rounds: int,
    metrics_port: int,
    api_key: str | None,
) -> None:
    """Publish a marked message to TOPIC and read it back through the API, every interval.

    Creates the topic when missing. Needs a key with the read and write scopes when the
    API has auth on. Each round is logged and counted in latam_canary_rounds_total.
    """
    settings = load_settings()
    setup(settings)
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise

    from latam.canary import Canary
    from latam.loader import http_topic_id
    from latam.process.lifecycle import PARENT_PID_ENV, exit_with_parent, serve_metrics

    base = url or f"http://{settings.host}:{settings.port}"
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if parent := os.environ.get(PARENT_PID_ENV):
        threading.Thread(
            target=exit_with_parent, args=(int(parent), on_signal), daemon=True
        ).start()
    if metrics_port:
        serve_metrics(settings.host, metrics_port, "canary")
    with httpx.Client(base_url=base, headers=headers) as client:
        topic_id = None
        while topic_id is None and not stop.is_set():
            try:
                topic_id = http_topic_id(client, topic, create=True)
            except httpx.HTTPStatusError as exc:
                if rounds or exc.response.status_code < 500:
                    fail(f"--topic: cannot find or create {topic!r} at {base}: {exc}", code=1)
                stop.wait(min(interval, 5))  # an API that is not ready yet is waited for
            except httpx.TransportError as exc:
                if rounds:
                    fail(f"--url: cannot reach {base}: {exc}", code=1)
                stop.wait(min(interval, 5))  # a canary started with its API waits for it
        if topic_id is None:
            return
        probe = Canary(client, topic, topic_id, timeout=timeout)
        done = probe.run(interval=interval, rounds=rounds, stop=stop)
    failed = [r for r in done if r.result != "ok"]
    for outcome in done:
        click.echo(f"{outcome.result} {outcome.seconds * 1000:.0f} ms {outcome.detail}".rstrip())
    if failed:
        fail(f"{len(failed)} of {len(done)} canary rounds failed", code=1)
