"""The ``latam`` command. Heavy modules are imported inside commands so ``--help`` is fast
and ``serve`` can set up multiprocess metrics before prometheus_client loads.

One module per command group; ``common`` holds what they share.
"""

from __future__ import annotations

import click

from latam.cli import (
    canary,
    dead_letters,
    export,
    indexes,
    keys,
    processes,
    publish,
    pubsub,
    rollups,
    schemas,
    tail,
    topics,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="latam")
def main() -> None:
    """latam: publish JSON messages to topics, store them, serve them over HTTP.

    Configuration comes from LATAM_* environment variables (and a .env file); see the
    README for the full table.
    """


for command in (
    processes.serve,
    processes.api,
    processes.worker,
    processes.migrate,
    topics.topics,
    topics.retention,
    schemas.schemas,
    dead_letters.dead_letters,
    publish.publish,
    tail.tail,
    export.export,
    keys.keys,
    pubsub.pubsub,
    rollups.rollups,
    indexes.index,
    canary.canary,
):
    main.add_command(command)
