"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from latam import __version__
from latam.api import compat, dead_letters, health, messages, problems, topics
from latam.api.middleware import RequestMiddleware
from latam.service import Service
from latam.settings import Settings

DESCRIPTION = """Publish JSON messages to topics, read them back in pages, inspect and
replay dead letters. Errors are `application/problem+json` (RFC 9457)."""


def create_app(service: Service, settings: Settings) -> FastAPI:
    """Wire routers, error handlers and middleware around one ``Service``."""
    app = FastAPI(title="latam", version=__version__, description=DESCRIPTION)
    app.state.service = service
    app.state.settings = settings
    for router in (topics, messages, dead_letters, compat, health):
        app.include_router(router.router)
    problems.install(app)
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
