"""``latam dead-letters``: inspect, replay and purge what the worker set aside."""

from __future__ import annotations

import click
import orjson

from latam.cli.common import build_service, echo_json, fail, run_guarded


@click.group("dead-letters")
def dead_letters() -> None:
    """Inspect, replay and purge messages the worker set aside."""


@dead_letters.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--after", help="Only dead letters after this id (paging).")
def dead_letters_list(limit: int, after: str | None) -> None:
    """Print dead letters as JSON lines: id, topic, message_id, reason, attempts."""
    for letter in run_guarded(build_service().list_dead_letters, limit=limit, cursor=after):
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
def dead_letters_replay(ids: tuple[str, ...], all_: bool) -> None:
    """Send dead letters IDS (or --all) back to the broker for another try."""
    chosen = _ids_or_all(ids, all_, "replay")
    click.echo(f"replayed {run_guarded(build_service().replay_dead_letters, ids=chosen)}")


@dead_letters.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
def dead_letters_purge(ids: tuple[str, ...], all_: bool) -> None:
    """Delete dead letters IDS (or --all) for good."""
    chosen = _ids_or_all(ids, all_, "purge")
    click.echo(f"purged {run_guarded(build_service().purge_dead_letters, ids=chosen)}")
