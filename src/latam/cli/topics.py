"""``latam topics``: list, create, rename and delete topics."""

from __future__ import annotations

import click
import orjson

from latam.cli.common import build_service, fail, run_guarded


@click.group()
def topics() -> None:
    """List, create, rename and delete topics."""


@topics.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
def topics_list(limit: int) -> None:
    """Print topics as JSON lines: id, name, created_at."""
    page = run_guarded(build_service().list_topics, limit=limit)
    for topic in page.items:
        click.echo(orjson.dumps({"id": topic.id, "name": topic.name}).decode())


@topics.command("create")
@click.argument("name")
def topics_create(name: str) -> None:
    """Create topic NAME and print its id."""
    topic = run_guarded(build_service().create_topic, name=name)
    click.echo(orjson.dumps({"id": topic.id, "name": topic.name}).decode())


@topics.command("rename")
@click.argument("topic_id", type=int)
@click.argument("name")
def topics_rename(topic_id: int, name: str) -> None:
    """Rename topic TOPIC_ID to NAME."""
    topic = run_guarded(build_service().rename_topic, topic_id=topic_id, name=name)
    click.echo(orjson.dumps({"id": topic.id, "name": topic.name}).decode())


@topics.command("retention")
@click.argument("topic_id", type=int)
@click.argument("seconds", metavar="SECONDS|forever")
def topics_retention(topic_id: int, seconds: str) -> None:
    """Keep TOPIC_ID's messages SECONDS after publication ('forever': never delete)."""
    if seconds == "forever":
        kept = None
    elif seconds.isdigit():
        kept = int(seconds)
    else:
        fail(f"SECONDS: {seconds!r} is not a whole number of seconds or 'forever'")
    topic = run_guarded(build_service().set_retention, topic_id=topic_id, seconds=kept)
    click.echo(
        orjson.dumps({"id": topic.id, "retention_seconds": topic.retention_seconds}).decode()
    )


@topics.command("delete")
@click.argument("topic_id", type=int)
def topics_delete(topic_id: int) -> None:
    """Delete topic TOPIC_ID and its stored messages."""
    run_guarded(build_service().delete_topic, topic_id=topic_id)
    click.echo(f"deleted topic {topic_id}")


@click.command("retention")
def retention() -> None:
    """Delete now the messages of every topic past its retention (workers do it too)."""
    click.echo(f"deleted {run_guarded(build_service().expire_now)} expired messages")
