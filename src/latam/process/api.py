"""The API process: uvicorn serving ``api_process_app`` in one or more processes."""

from __future__ import annotations

import gc
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from latam.errors import SchemaNotCurrent, TransientError
from latam.health import REFRESH_SECONDS
from latam.process.lifecycle import exit_with_parent, serve_metrics
from latam.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("latam")


def run_api(settings: Settings) -> None:
    """Serve the HTTP API until SIGINT/SIGTERM, in ``settings.api_processes`` processes.

    Each process builds its own app from the environment (``api_process_app``), so the
    host and port chosen on the command line are exported first: the processes must
    agree with this one, above all on whether keys are required.
    """
    import uvicorn

    os.environ["LATAM_HOST"], os.environ["LATAM_PORT"] = settings.host, str(settings.port)
    if settings.console_secret is None:
        # One secret for the processes started here, so a console session works on any of
        # them; another `latam api` (another instance) makes its own.
        os.environ["LATAM_CONSOLE_SECRET"] = secrets.token_urlsafe(32)
    processes = settings.api_processes
    log.info(
        "API listening on http://%s:%d (docs at /docs, web console at /console), %d process(es)",
        settings.host,
        settings.port,
        processes,
    )
    if settings.auth_enabled:
        log.info("authentication is on: send 'Authorization: Bearer <key>' (latam keys create)")
    else:
        log.warning(
            "authentication is OFF (bound to loopback %s); set LATAM_AUTH=on to require keys",
            settings.host,
        )
    if settings.metrics_port:
        # In this process, before uvicorn starts the API processes: one exposition of
        # them all (multiprocess mode), never reachable on the API port.
        serve_metrics(settings.host, settings.metrics_port, "API")
    uvicorn.run(
        "latam.process.api:api_process_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=processes,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
    )


def api_process_app() -> FastAPI:
    """The app of one API process, from ``LATAM_*`` (uvicorn calls this in each process)."""
    from latam import tracing
    from latam.api.app import create_app
    from latam.bootstrap import build_keys, build_service
    from latam.logs import configure_logging
    from latam.retention import Retention

    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    tracing.configure(service_name="latam-api", otlp_endpoint=settings.otlp_endpoint)
    if settings.api_processes > 1:
        # A process of a group: when the process that started the group is gone
        # (even killed with SIGKILL), stop instead of holding the port as an orphan.
        threading.Thread(
            target=exit_with_parent,
            args=(os.getppid(), lambda *_: os.kill(os.getpid(), signal.SIGTERM)),
            daemon=True,
        ).start()
    service = build_service(settings)
    try:
        service.store.ping()
    except SchemaNotCurrent as exc:
        log.error("the store cannot be used: %s; requests answer 503 until then", exc.detail)
    except TransientError as exc:
        log.warning("the store does not answer yet: %s", exc.detail)

    stop_checks = threading.Event()

    def check_dependencies_forever() -> None:
        # Cloud probes call /healthz, not /readyz: without this, latam_dependency_up in an
        # API process would be absent, or frozen at the last /readyz.
        while not stop_checks.wait(REFRESH_SECONDS):
            service.readiness()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=check_dependencies_forever, daemon=True).start()
        if settings.pubsub_push_enabled and settings.retention_interval_seconds > 0:
            # Where Pub/Sub pushes to the API, it is the ingest path and no `latam worker`
            # runs: retention runs here instead.
            retention = Retention(service.store)
            interval = settings.retention_interval_seconds
            threading.Thread(
                target=retention.run_forever, args=(stop_checks, interval), daemon=True
            ).start()
        try:
            yield
        finally:
            stop_checks.set()
            service.store.close()
            service.broker.close()

    app = create_app(service, settings, build_keys(settings, service.store), lifespan=lifespan)
    gc.freeze()  # what start-up built lives as long as the process: keep it out of GC passes
    # The event loop waits at most this long for the GIL held by a thread building a big
    # page (default 5 ms): /healthz and small reads stay fast beside heavy readers.
    sys.setswitchinterval(0.001)
    return app
