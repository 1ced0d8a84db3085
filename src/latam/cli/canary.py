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

# At most this long between rounds: the alerts assume at least 3 rounds in 10 minutes
# and a success within 15 (deploy/prometheus/rules/latam-alerts.yml).
MIN_INTERVAL, MAX_INTERVAL = 0.1, 120.0


@click.command()
@api_url_option
@click.option(
    "--topic",
    default="latam-canary",
    envvar="LATAM_CANARY_TOPIC",
    show_default=True,
    help="The canary's topic (the status page reads the same LATAM_CANARY_TOPIC).",
)
@ranged_option(
    "--interval",
    click.FloatRange(MIN_INTERVAL, MAX_INTERVAL),
    30.0,
    "Seconds from one round's start to the next (the alerts assume at most 120).",
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
@click.option(
    "--id-token-audience",
    envvar="LATAM_CANARY_ID_TOKEN_AUDIENCE",
    help="Also send a Google ID token for this audience (an IAM-only Cloud Run API: its URL)"
    " in X-Serverless-Authorization (LATAM_CANARY_ID_TOKEN_AUDIENCE).",
)
def canary(
    url: str | None,
    topic: str,
    interval: float,
    timeout: float,
    rounds: int,
    metrics_port: int,
    api_key: str | None,
    id_token_audience: str | None,
) -> None:
    """Publish a marked message to TOPIC and read it back through the API, every interval.

    Creates the topic when missing (an admin key; a key with the read and publish scopes
    is enough once the topic exists). Each round is logged and counted in
    latam_canary_rounds_total, failed look-ups of the topic included. Where Cloud Run's IAM
    guards the API, --id-token-audience adds the workload's Google ID token to each request.
    """
    settings = load_settings()
    setup(settings)
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise

    from latam.canary import Canary
    from latam.process.canary import canary_client
    from latam.process.lifecycle import PARENT_PID_ENV, exit_with_parent, serve_metrics

    base = url or f"http://{settings.host}:{settings.port}"
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if parent := os.environ.get(PARENT_PID_ENV):
        watch = threading.Thread(target=exit_with_parent, args=(int(parent), on_signal))
        watch.daemon = True
        watch.start()
    if metrics_port:
        try:
            serve_metrics(settings.host, metrics_port, "canary")
        except OSError as exc:
            fail(f"--metrics-port: cannot serve metrics on port {metrics_port}: {exc.strerror}")
    client = canary_client(
        base, api_key=api_key, id_token_audience=id_token_audience or None, timeout=timeout
    )
    with client:
        probe = Canary(client, topic, timeout=timeout, stop=stop)
        done = probe.run(interval=interval, rounds=rounds)
    for outcome in done:
        click.echo(f"{outcome.result} {outcome.seconds * 1000:.0f} ms {outcome.detail}".rstrip())
    failed = [r for r in done if r.result != "ok"]
    if failed:
        fail(f"{len(failed)} of {len(done)} canary rounds failed", code=1)
