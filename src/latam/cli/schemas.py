"""``latam schemas``: a topic's data contract (JSON Schema 2020-12), versioned."""

from __future__ import annotations

from typing import Any

import click
import orjson

from latam.cli.common import build_service, echo_json, fail, run_guarded

TOPIC = click.argument("topic_id", metavar="TOPIC", type=click.IntRange(1, 2**63 - 1))


@click.group()
def schemas() -> None:
    """Set, show, list and stop enforcing a topic's JSON Schema (draft 2020-12)."""


def _rendered(found: Any) -> Any:
    from latam.api.contracts import schema_json

    return orjson.loads(orjson.dumps(schema_json(found)))


@schemas.command("set")
@TOPIC
@click.argument("file", type=click.File("rb"))
@click.option(
    "--compatibility",
    type=click.Choice(["backward", "none"]),
    default="backward",
    show_default=True,
    help="backward: refuse a version that would reject data valid under the latest one.",
)
def schemas_set(topic_id: int, file: Any, compatibility: str) -> None:
    """Enforce the JSON Schema in FILE ('-' for stdin) on TOPIC, as a new version."""
    from latam.errors import IncompatibleSchema

    raw = file.read()
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        fail(f"FILE: {file.name} is not valid JSON ({exc})")
    service = build_service()

    def put() -> Any:
        try:
            return service.put_schema(
                topic_id=topic_id, schema=document, compatibility=compatibility
            )
        except IncompatibleSchema as exc:
            exc.problems.append("(--compatibility none accepts it)")
            raise

    echo_json(_rendered(run_guarded(put)))


@schemas.command("show")
@TOPIC
@click.option("--version", "version", type=click.IntRange(1, 2**31 - 1), help="This version.")
def schemas_show(topic_id: int, version: int | None) -> None:
    """Print the version TOPIC enforces (or --version N)."""
    service = build_service()
    if version is None:
        found = run_guarded(service.current_schema, topic_id=topic_id)
    else:
        found = run_guarded(service.schema_version, topic_id=topic_id, version=version)
    echo_json(_rendered(found))


@schemas.command("versions")
@TOPIC
def schemas_versions(topic_id: int) -> None:
    """Print every version of TOPIC's schema as JSON lines, oldest first."""
    for found in run_guarded(build_service().schema_versions, topic_id=topic_id):
        click.echo(orjson.dumps(_rendered(found)).decode())


@schemas.command("delete")
@TOPIC
def schemas_delete(topic_id: int) -> None:
    """Stop enforcing TOPIC's schema (its versions are kept)."""
    run_guarded(build_service().drop_schema, topic_id=topic_id)
    click.echo(f"topic {topic_id} enforces no schema now")
