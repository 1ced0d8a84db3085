"""The ``latam`` command. Heavy modules are imported inside commands so ``--help`` is fast
and ``serve`` can set up multiprocess metrics before prometheus_client loads."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click
import orjson
from pydantic import ValidationError

from latam.settings import Settings


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
    from latam.observability import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format)


def run_guarded(action: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a command body; latam errors become one line on stderr and exit status 1."""
    from latam.bootstrap import ConfigError
    from latam.errors import LatamError

    try:
        return action(*args, **kwargs)
    except ConfigError as exc:
        fail(str(exc))
    except LatamError as exc:
        fail(exc.detail, code=1)


host_option = click.option("--host", help="Address to bind (LATAM_HOST; default 127.0.0.1).")
port_option = click.option(
    "--port", type=click.IntRange(0, 65535), help="Port to bind (LATAM_PORT; default 8000)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="latam")
def main() -> None:
    """latam: publish JSON messages to topics, store them, serve them over HTTP.

    Configuration comes from LATAM_* environment variables (and a .env file); see the
    README for the full table.
    """


@main.command()
@host_option
@port_option
def serve(host: str | None, port: int | None) -> None:
    """Run the API and the worker together (the embedded default); migrates on start."""
    settings = load_settings(host=host, port=port)
    from latam.runtime import prepare_multiprocess_metrics

    prepare_multiprocess_metrics(settings)
    setup(settings)
    from latam.runtime import run_serve

    run_guarded(run_serve, settings)


@main.command()
@host_option
@port_option
def api(host: str | None, port: int | None) -> None:
    """Run only the HTTP API (publishes to the broker, reads from the store)."""
    settings = load_settings(host=host, port=port)
    if settings.api_processes > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        from latam.runtime import prepare_multiprocess_metrics

        prepare_multiprocess_metrics(settings)  # one /metrics for all the API processes
    setup(settings)
    from latam.runtime import run_api

    run_guarded(run_api, settings)


@main.command()
def worker() -> None:
    """Run only the worker: broker → store, until SIGTERM (finishes the batch in hand)."""
    from latam.runtime import defer_signals

    defer_signals()  # a SIGTERM during start-up still means a clean stop, not a kill
    settings = load_settings()
    setup(settings)
    from latam.runtime import run_worker

    run_guarded(run_worker, settings)


@main.command()
def migrate() -> None:
    """Create or upgrade the store's schema (safe to run again)."""
    settings = load_settings()
    from latam.bootstrap import build_store
    from latam.storage import migrate as migrations

    def go() -> str:
        store = build_store(settings)
        try:
            return migrations.upgrade(store.engine)
        finally:
            store.close()

    click.echo(f"schema at revision {run_guarded(go)}")


def _service() -> Any:
    from latam.bootstrap import build_service

    return run_guarded(build_service, load_settings())


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@main.group()
def topics() -> None:
    """List, create, rename and delete topics."""


@topics.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
def topics_list(limit: int) -> None:
    """Print topics as JSON lines: id, name, created_at."""
    page = run_guarded(_service().list_topics, limit=limit)
    for topic in page.items:
        click.echo(orjson.dumps({"id": topic.id, "name": topic.name}).decode())


@topics.command("create")
@click.argument("name")
def topics_create(name: str) -> None:
    """Create topic NAME and print its id."""
    topic = run_guarded(_service().create_topic, name=name)
    click.echo(orjson.dumps({"id": topic.id, "name": topic.name}).decode())


@topics.command("rename")
@click.argument("topic_id", type=int)
@click.argument("name")
def topics_rename(topic_id: int, name: str) -> None:
    """Rename topic TOPIC_ID to NAME."""
    topic = run_guarded(_service().rename_topic, topic_id=topic_id, name=name)
    click.echo(orjson.dumps({"id": topic.id, "name": topic.name}).decode())


@topics.command("delete")
@click.argument("topic_id", type=int)
def topics_delete(topic_id: int) -> None:
    """Delete topic TOPIC_ID and its stored messages."""
    run_guarded(_service().delete_topic, topic_id=topic_id)
    click.echo(f"deleted topic {topic_id}")


@main.group("dead-letters")
def dead_letters() -> None:
    """Inspect, replay and purge messages the worker set aside."""


@dead_letters.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--after", help="Only dead letters after this id (paging).")
def dead_letters_list(limit: int, after: str | None) -> None:
    """Print dead letters as JSON lines: id, topic, message_id, reason, attempts."""
    for letter in run_guarded(_service().list_dead_letters, limit=limit, cursor=after):
        row = {
            "id": letter.id,
            "topic": letter.topic,
            "message_id": letter.message_id,
            "reason": letter.reason,
            "delivery_attempts": letter.delivery_attempts,
        }
        click.echo(orjson.dumps(row).decode())


@dead_letters.command("show")
@click.argument("dead_letter_id")
def dead_letters_show(dead_letter_id: str) -> None:
    """Print one dead letter in full, body included."""
    from latam.api.render import dead_letter_json

    letter = run_guarded(_service().get_dead_letter, dead_letter_id=dead_letter_id)
    echo_json(dead_letter_json(letter))


def _ids_or_all(ids: tuple[str, ...], all_: bool, verb: str) -> list[str] | None:
    if bool(ids) == all_:
        fail(f"{verb}: give dead-letter IDS or --all (not both)")
    return None if all_ else list(ids)


@dead_letters.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
def dead_letters_replay(ids: tuple[str, ...], all_: bool) -> None:
    """Send dead letters IDS (or --all) back to the broker for another try."""
    chosen = _ids_or_all(ids, all_, "replay")
    click.echo(f"replayed {run_guarded(_service().replay_dead_letters, ids=chosen)}")


@dead_letters.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
def dead_letters_purge(ids: tuple[str, ...], all_: bool) -> None:
    """Delete dead letters IDS (or --all) for good."""
    chosen = _ids_or_all(ids, all_, "purge")
    click.echo(f"purged {run_guarded(_service().purge_dead_letters, ids=chosen)}")


@main.command()
@click.option("--topic", required=True, help="Name of the topic to publish to.")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--url",
    help="Base URL of the latam API (default http://LATAM_HOST:LATAM_PORT).",
)
@click.option("--direct", is_flag=True, help="Publish straight to LATAM_BROKER_URL, not over HTTP.")
@click.option("--create", is_flag=True, help="Create the topic when it does not exist.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=500,
    show_default=True,
    help="Messages per request.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Batches in flight at once.",
)
@click.option(
    "--id-field",
    help="Take each message's idempotency key from this field of the record, so that "
    "loading the same file again stores nothing twice.",
)
@click.option("--strict", is_flag=True, help="Stop at the first malformed record.")
@click.option("--api-key", envvar="LATAM_API_KEY", help="Bearer key for the API (LATAM_API_KEY).")
def publish(
    topic: str,
    file: Any,
    url: str | None,
    direct: bool,
    create: bool,
    batch_size: int,
    concurrency: int,
    id_field: str | None,
    strict: bool,
    api_key: str | None,
) -> None:
    """Publish FILE (JSON Lines, or a JSON array of objects; - for stdin) to a topic.

    Each record is one message's data. Malformed records are reported with their line
    number and skipped (--strict stops instead); the exit status is 1 when any record was
    rejected, 130 on Ctrl-C.
    """
    from latam.bulk import publish_file

    settings = load_settings()
    code = run_guarded(
        publish_file,
        settings,
        file,
        topic=topic,
        url=url,
        direct=direct,
        create=create,
        batch_size=batch_size,
        concurrency=concurrency,
        id_field=id_field,
        strict=strict,
        api_key=api_key,
    )
    sys.exit(code)


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (stored as hashes; shown once)."""


def _keys() -> Any:
    from latam.auth import KeyStore
    from latam.bootstrap import build_store

    return KeyStore(run_guarded(build_store, load_settings()).engine)


def _key_row(key: Any) -> dict[str, Any]:
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
    type=click.Choice(["read", "publish", "admin"]),
    help="Repeat for several; admin implies read and publish.",
)
@click.option("--topic", "topics", multiple=True, type=int, help="Limit to topic ids (repeat).")
def keys_create(name: str, scopes: tuple[str, ...], topics: tuple[int, ...]) -> None:
    """Create a key and print it once; only its hash is stored."""
    key, token = run_guarded(_keys().create, name=name, scopes=scopes, topics=topics or None)
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


from latam.cli_pubsub import pubsub  # noqa: E402

main.add_command(pubsub)
