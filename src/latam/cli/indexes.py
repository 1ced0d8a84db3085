"""``latam index``: index a hot field of a topic so that filters on it seek."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

import click

from latam.cli.common import fail, load_settings, run_guarded

if TYPE_CHECKING:
    from latam.storage.repository import SqlStore


@click.group("index")
def index() -> None:
    """Indexes on a field of one topic's messages (docs/filters.md)."""


@index.command("create")
@click.argument("topic")
@click.argument("field")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["string", "number"]),
    default="string",
    show_default=True,
    help="Which filters the index serves: string (eq.LA800) or number (gte.15).",
)
def index_create(topic: str, field: str, kind: str) -> None:
    """Index FIELD (data.flight, attributes.source) of TOPIC (a name or an id).

    On PostgreSQL the index is built CONCURRENTLY, writes going on; on SQLite the build
    holds the write lock; on MySQL/MariaDB a virtual column is added first.
    """
    from latam.errors import InvalidQuery
    from latam.filters import parse_path
    from latam.storage import field_index

    try:
        path = parse_path(field)
    except InvalidQuery as exc:
        fail(f"FIELD: {exc.detail}")

    def go() -> None:
        store, topic_id = _store_and_topic(topic)
        try:
            typed = cast(Literal["string", "number"], kind)
            name = field_index.create(store.engine, topic_id, path, typed)
        finally:
            store.close()
        click.echo(f"created {name}: {path.name} ({kind}) of topic {topic_id}")

    run_guarded(go)


@index.command("list")
def index_list() -> None:
    """Every field index: name, topic and definition."""
    from latam.bootstrap import build_store
    from latam.storage import field_index

    def go() -> None:
        store = build_store(load_settings())
        try:
            found = field_index.list_indexes(store.engine)
        finally:
            store.close()
        for item in found:
            click.echo(f"{item.name}\ttopic {item.topic_id}\t{item.definition}")
        click.echo(f"{len(found)} field indexes")

    run_guarded(go)


@index.command("drop")
@click.argument("name")
def index_drop(name: str) -> None:
    """Drop the field index NAME (as `latam index list` shows it)."""
    from latam.bootstrap import build_store
    from latam.storage import field_index

    def go() -> None:
        store = build_store(load_settings())
        try:
            field_index.drop(store.engine, name)
        finally:
            store.close()
        click.echo(f"dropped {name}")

    run_guarded(go)


def _store_and_topic(topic: str) -> tuple[SqlStore, int]:
    """The configured store and TOPIC's id; NotFound when it does not exist."""
    from latam.bootstrap import build_store
    from latam.errors import NotFound

    store = build_store(load_settings())
    numeric = topic.isascii() and topic.isdigit()  # "²".isdigit() too, which int() refuses
    found = int(topic) if numeric else store.topic_ids([topic]).get(topic)
    if found is None:
        store.close()
        raise NotFound(f"topic {topic!r} does not exist")
    try:
        store.get_topic(found)
    except NotFound:
        store.close()
        raise
    return store, found
