"""``latam rollups``: check the stats' rollups against the stored rows."""

from __future__ import annotations

import sys

import click

from latam.cli.common import load_settings, run_guarded


@click.group()
def rollups() -> None:
    """The per-minute, hour and day figures the stats endpoints read."""


@rollups.command("verify")
@click.argument("topic", required=False)
def rollups_verify(topic: str | None) -> None:
    """Recompute the rollups of TOPIC (a name or an id; every topic when omitted) from
    the stored rows and print each difference; exit status 1 if there is any."""
    from latam.bootstrap import build_store
    from latam.errors import NotFound
    from latam.storage import rollups as figures

    def go() -> int:
        store = build_store(load_settings())
        try:
            topic_id = None
            if topic is not None:
                topic_id = int(topic) if topic.isdigit() else store.topic_ids([topic]).get(topic)
                if topic_id is None:
                    raise NotFound(f"topic {topic!r} does not exist")
                store.get_topic(topic_id)
            left = figures.build_left(store.engine)
            if left is not None:
                click.echo(
                    f"the rollups are still being built ({left:,} seqs of older rows left);"
                    " the stats read the rows until then"
                )
                return 1
            differences = figures.verify(store.engine, topic_id)
            for difference in differences:
                click.echo(str(difference))
            scope = "every topic" if topic is None else f"topic {topic}"
            click.echo(f"{len(differences)} differences between the rollups and the rows ({scope})")
            return 1 if differences else 0
        finally:
            store.close()

    sys.exit(run_guarded(go))
