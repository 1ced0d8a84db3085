"""``latam keys``: create, list and revoke API keys."""

from __future__ import annotations

from typing import Any

import click
import orjson

from latam.cli.common import load_settings, run_guarded
from latam.keys import SCOPES, ApiKey, KeyStore, create_key


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (stored as hashes; shown once)."""


def _keys() -> KeyStore:
    """The configured key store, or exit with one line."""
    from latam.bootstrap import build_key_store

    store: KeyStore = run_guarded(build_key_store, load_settings())
    return store


def _key_row(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "scopes": sorted(key.scopes),
        "topics": sorted(key.topics) if key.topics is not None else None,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked": key.revoked_at is not None,
    }


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPES),
    help="Repeat for several; admin implies read and publish.",
)
@click.option("--topic", "topics", multiple=True, type=int, help="Limit to topic ids (repeat).")
def keys_create(name: str, scopes: tuple[str, ...], topics: tuple[int, ...]) -> None:
    """Create a key and print it once; only its hash is stored."""
    key, token = run_guarded(create_key, _keys(), name=name, scopes=scopes, topics=topics or None)
    click.echo(orjson.dumps({**_key_row(key), "api_key": token}).decode())
    click.echo("store this key now: it cannot be shown again", err=True)


@keys.command("list")
def keys_list() -> None:
    """Print every key as JSON lines (never the secret)."""
    for key in run_guarded(_keys().list):
        click.echo(orjson.dumps(_key_row(key)).decode())


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke KEY_ID (the part after lt_); it stops working within seconds."""
    key = run_guarded(_keys().revoke, key_id)
    click.echo(orjson.dumps(_key_row(key)).decode())
