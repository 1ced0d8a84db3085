"""What every ``latam`` command shares: settings with one-line errors, guarded bodies."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
import orjson
from pydantic import ValidationError

from latam.settings import Settings

Command = TypeVar("Command", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"latam: error: {message}", err=True)
    sys.exit(code)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, CLI options winning; one line per bad value."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "setting"
        source = f"--{field.replace('_', '-')}" if field in given else f"LATAM_{field.upper()}"
        fail(f"{source}: {err['msg']}")


def setup(settings: Settings) -> None:
    from latam.logs import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format)


def run_guarded(action: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a command body; latam errors become one line on stderr and exit status 1."""
    from latam.errors import ConfigError, LatamError

    try:
        return action(*args, **kwargs)
    except ConfigError as exc:
        fail(str(exc))
    except LatamError as exc:
        fail(exc.detail + "".join(f"\n  - {line}" for line in _details(exc)), code=1)


def _details(exc: Exception) -> list[str]:
    """What a refusal lists: a schema violation's failures, an incompatibility's reasons."""
    errors = getattr(exc, "errors", None) or []
    problems = getattr(exc, "problems", None) or []
    return [f"{e['pointer'] or '/'}: {e['message']}" for e in errors] + list(problems)


host_option = click.option("--host", help="Address to bind (LATAM_HOST; default 127.0.0.1).")
# The commands that talk to a running API over HTTP.
api_url_option = click.option(
    "--url", help="Base URL of the latam API (default http://LATAM_HOST:LATAM_PORT)."
)
api_key_option = click.option(
    "--api-key", envvar="LATAM_API_KEY", help="Bearer key for the API (LATAM_API_KEY)."
)


def ranged_option(
    name: str, kind: click.IntRange | click.FloatRange, default: float, help: str
) -> Callable[[Command], Command]:
    """An option with a bounded range and a shown default."""
    return click.option(name, type=kind, default=default, show_default=True, help=help)


port_option = click.option(
    "--port", type=click.IntRange(0, 65535), help="Port to bind (LATAM_PORT; default 8000)."
)


def build_service() -> Any:
    """The service of the configured store and broker, or exit with one line."""
    from latam.bootstrap import build_service as build

    return run_guarded(build, load_settings())


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
