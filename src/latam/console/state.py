"""What the console's pages share in one API process (``app.state.console``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from starlette.requests import Request

from latam.console.gate import Gate, Limiter
from latam.console.overview import Overview
from latam.console.sessions import Signer
from latam.keys import KeyVerifier
from latam.service import Service
from latam.settings import Settings
from latam.status import StatusPage
from latam.status.slos import Catalog


@dataclass
class Console:
    service: Service
    settings: Settings
    keys: KeyVerifier
    gate: Gate
    overview: Overview

    @classmethod
    def build(
        cls,
        service: Service,
        settings: Settings,
        keys: KeyVerifier,
        *,
        failures: Limiter,
        status_page: StatusPage | None = None,
    ) -> Console:
        """The console of one process. Without ``LATAM_CONSOLE_SECRET`` its sessions are
        signed with a random secret: they work on this process only (``latam api``
        shares one with the processes it starts)."""
        configured = settings.console_secret
        secret = configured.get_secret_value().encode() if configured else secrets.token_bytes(32)
        gate = Gate(settings, keys, service, failures, Signer(secret))
        catalog = status_page.catalog if status_page else Catalog(0, ())
        return cls(service, settings, keys, gate, Overview(service, status_page, catalog))


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console
