"""``latam dead-letters``: inspect, replay and purge what the worker set aside."""

from __future__ import annotations

from typing import Any

import click
import orjson

from latam.cli.common import build_service, echo_json, fail, run_guarded


@click.group("dead-letters")
def dead_letters() -> None:
    """Inspect, replay and purge messages the worker set aside."""


@dead_letters.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--after", help="Only dead letters after this id (paging).")
@click.option("--topic", help="Only this topic's (by name).")
@click.option("--reason", help="Only this reason (its name: schema_violation, max_attempts …).")
def dead_letters_list(limit: int, after: str | None, topic: str | None, reason: str | None) -> None:
    """Print dead letters as JSON lines: id, topic, message_id, reason, attempts."""
    from latam.service import LetterFilter

    service = build_service()
    where = LetterFilter(topic=topic, reason=reason)
    page = run_guarded(service.list_dead_letters, limit=limit, cursor=after, where=where)
    for letter in page.items:
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

    letter = run_guarded(build_service().get_dead_letter, dead_letter_id=dead_letter_id)
    echo_json(dead_letter_json(letter))


def _ids_or_all(ids: tuple[str, ...], all_: bool, verb: str) -> list[str] | None:
    if bool(ids) == all_:
        fail(f"{verb}: give dead-letter IDS or --all (not both)")
    return None if all_ else list(ids)


@dead_letters.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@click.option(
    "--data",
    "data_file",
    type=click.File("rb"),
    help="Fix and replay one letter: its corrected data, a JSON object in FILE ('-': stdin).",
)
def dead_letters_replay(ids: tuple[str, ...], all_: bool, data_file: Any) -> None:
    """Send dead letters IDS (or --all) back to the broker for another try."""
    chosen = _ids_or_all(ids, all_, "replay")
    if data_file is None:
        click.echo(f"replayed {run_guarded(build_service().replay_dead_letters, ids=chosen)}")
        return
    if chosen is None or len(chosen) != 1:
        fail("replay --data: give exactly one dead-letter ID")
    try:
        data = orjson.loads(data_file.read())
    except orjson.JSONDecodeError as exc:
        fail(f"--data: {data_file.name} is not valid JSON ({exc})")
    if not isinstance(data, dict):
        fail(f"--data: {data_file.name} must hold a JSON object")
    message_id = run_guarded(
        build_service().replay_corrected, dead_letter_id=chosen[0], data=data, attributes=None
    )
    click.echo(f"replayed 1 as message {message_id}")


@dead_letters.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
def dead_letters_purge(ids: tuple[str, ...], all_: bool) -> None:
    """Delete dead letters IDS (or --all) for good."""
    chosen = _ids_or_all(ids, all_, "purge")
    click.echo(f"purged {run_guarded(build_service().purge_dead_letters, ids=chosen)}")
