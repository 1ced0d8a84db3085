"""``latam pubsub``: set up the Google Cloud Pub/Sub resources latam uses."""

from __future__ import annotations

import click

from latam.cli.common import fail, load_settings, run_guarded


@click.group()
def pubsub() -> None:
    """Google Cloud Pub/Sub helpers (honours PUBSUB_EMULATOR_HOST)."""


@pubsub.command()
def setup() -> None:
    """Create or verify the topic, subscription and dead-letter pair of LATAM_BROKER_URL.

    Safe to run again: existing resources are reported as verified, not changed.
    """
    settings = load_settings()
    if not settings.effective_broker_url.startswith("pubsub://"):
        fail("LATAM_BROKER_URL must be pubsub://PROJECT/TOPIC?subscription=SUB")
    from latam.bootstrap import delivery_policy, pubsub_config
    from latam.broker.pubsub.admin import ensure_resources

    config = run_guarded(pubsub_config, settings)
    for line in run_guarded(ensure_resources, config, delivery_policy(settings)):
        click.echo(line)


# The command's name in earlier releases; scripts that call it keep working.
pubsub.add_command(
    click.Command("bootstrap", callback=setup.callback, help=setup.help, hidden=True)
)
