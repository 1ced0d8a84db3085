"""``latam serve|api|worker|migrate``: the long-running processes and the schema."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from latam.cli.canary import MAX_INTERVAL, MIN_INTERVAL
from latam.cli.common import fail, host_option, load_settings, port_option, run_guarded, setup

if TYPE_CHECKING:
    from latam.settings import Settings


@click.command()
@host_option
@port_option
@click.option(
    "--canary-interval",
    type=click.FloatRange(0, MAX_INTERVAL),
    default=0.0,
    help="Also run `latam canary` against this API every this many seconds (0: not; at least 0.1).",
)
def serve(host: str | None, port: int | None, canary_interval: float) -> None:
    """Run the API and the worker together (the embedded default); migrates on start."""
    if 0 < canary_interval < MIN_INTERVAL:
        fail(f"--canary-interval: 0 or at least {MIN_INTERVAL:g} seconds")
    settings = load_settings(host=host, port=port)
    from latam.process.lifecycle import prepare_multiprocess_metrics

    prepare_multiprocess_metrics(settings)
    setup(settings)
    migrate_apart(settings)
    from latam.process.supervisor import run_serve

    run_guarded(run_serve, settings, canary_interval=canary_interval)


@click.command()
@host_option
@port_option
def api(host: str | None, port: int | None) -> None:
    """Run only the HTTP API (publishes to the broker, reads from the store)."""
    settings = load_settings(host=host, port=port)
    if settings.api_processes > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        from latam.process.lifecycle import prepare_multiprocess_metrics

        prepare_multiprocess_metrics(settings)  # one /metrics for all the API processes
    setup(settings)
    from latam.process.api import run_api

    run_guarded(run_api, settings)


@click.command()
def worker() -> None:
    """Run only the worker: broker → store, until SIGTERM (finishes the batch in hand)."""
    from latam.process.lifecycle import defer_signals

    defer_signals()  # a SIGTERM during start-up still means a clean stop, not a kill
    settings = load_settings()
    setup(settings)
    from latam.process.worker import run_worker

    run_guarded(run_worker, settings)


def _upgrade(settings: Settings) -> str:
    """The schema brought to the newest revision; that revision."""
    from latam.bootstrap import build_store
    from latam.storage import migrate as migrations

    store = build_store(settings)
    try:
        return migrations.upgrade(store.engine)
    finally:
        store.close()


def migrate_apart(settings: Settings) -> None:
    """``latam migrate`` in a forked child (``lifecycle.run_apart``), so that Alembic never
    enters this process, which goes on to serve the API. A failed migration ends this
    process with the child's exit status, its error printed."""
    from latam.process.lifecycle import run_apart

    code = run_apart(run_guarded, _upgrade, settings, name="the migration")
    if code != 0:
        sys.exit(code)


@click.command()
def migrate() -> None:
    """Create or upgrade the store's schema (safe to run again)."""
    settings = load_settings()
    click.echo(f"schema at revision {run_guarded(_upgrade, settings)}")
