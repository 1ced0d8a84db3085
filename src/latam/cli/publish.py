"""``latam publish``: the bulk loader wired to HTTP or the broker, with progress and a summary."""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Any

import click

from latam.cli.common import (
    api_key_option,
    api_url_option,
    load_settings,
    ranged_option,
    run_guarded,
)
from latam.errors import NotFound
from latam.settings import Settings

if TYPE_CHECKING:  # the loader brings httpx: loaded when the command runs, not for --help
    from latam.loader import Sink, Tally

PLAIN_PROGRESS_SECONDS = 5.0


def _sink(settings: Settings, topic: str, opts: dict[str, Any]) -> tuple[Sink, Any]:
    import httpx

    from latam.loader import BrokerSink, HttpSink, http_topic_id

    if opts["direct"]:
        from latam.bootstrap import build_broker, build_store

        store = build_store(settings)
        topic_id = store.topic_ids([topic]).get(topic)
        if topic_id is None:
            if not opts["create"]:
                raise NotFound(f"topic {topic!r} does not exist (use --create)")
            topic_id = store.create_topic(topic).id
        store.close()
        broker = build_broker(settings)
        return BrokerSink(broker.publish, topic, topic_id), broker.close
    base = opts["url"] or f"http://{settings.host}:{settings.port}"
    headers = {"authorization": f"Bearer {opts['api_key']}"} if opts["api_key"] else {}
    client = httpx.Client(base_url=base, timeout=60, headers=headers)
    try:
        topic_id = http_topic_id(client, topic, create=opts["create"])
    except httpx.HTTPError as exc:
        client.close()
        raise NotFound(f"cannot look up topic {topic!r} at {base}: {exc}") from exc
    return HttpSink(client, topic_id), client.close


class Progress:
    """A bar with rate and ETA on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, total_bytes: int | None) -> None:
        self.started = time.monotonic()
        self.last_line = self.started
        self.bar: Any = None
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as Bar,
            )

            self.bar = Bar(
                TextColumn("{task.fields[published]:,} published"),
                BarColumn(),
                TextColumn("{task.fields[rate]:,.0f} msg/s"),
                TimeRemainingColumn(),
                MofNCompleteColumn() if total_bytes is None else TextColumn(""),
                transient=True,
            )
            self.task = self.bar.add_task("publish", total=total_bytes, published=0, rate=0.0)
            self.bar.start()

    def update(self, tally: Tally) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = tally.published / elapsed
        if self.bar is not None:
            self.bar.update(
                self.task, completed=tally.bytes_read, published=tally.published, rate=rate
            )
        elif time.monotonic() - self.last_line >= PLAIN_PROGRESS_SECONDS:
            self.last_line = time.monotonic()
            click.echo(f"published {tally.published} of {tally.read} read ({rate:.0f}/s)", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _size(stream: IO[bytes]) -> int | None:
    try:
        import os

        return os.fstat(stream.fileno()).st_size or None
    except (OSError, ValueError):
        return None


def publish_file(settings: Settings, stream: IO[bytes], *, topic: str, **opts: Any) -> int:
    """Publish every record of ``stream``; returns the process exit status."""
    from latam.loader import RejectedLine, Tally, read_records, run

    sink, close = _sink(settings, topic, opts)
    tally = Tally()
    progress = Progress(_size(stream))
    status = 0
    try:
        run(
            read_records(stream),
            sink,
            tally,
            batch_size=opts["batch_size"],
            concurrency=opts["concurrency"],
            strict=opts["strict"],
            on_progress=progress.update,
            id_field=opts["id_field"],
            max_bytes=settings.max_message_bytes,
        )
    except RejectedLine as exc:
        tally.rejected.append(exc.rejection)
        status = 1
    except KeyboardInterrupt:
        status = 130
    finally:
        progress.close()
        close()
    for rejection in tally.rejected[:100]:
        click.echo(f"line {rejection.number}: {rejection.reason}", err=True)
    if len(tally.rejected) > 100:
        click.echo(f"... and {len(tally.rejected) - 100} more rejected lines", err=True)
    elapsed = time.monotonic() - progress.started
    stopped = " (interrupted)" if status == 130 else ""
    click.echo(
        f"read {tally.read}, published {tally.published}, rejected {len(tally.rejected)}"
        f" in {elapsed:.1f}s{stopped}"
    )
    return status or (1 if tally.rejected else 0)


@click.command()
@click.option("--topic", required=True, help="Name of the topic to publish to.")
@click.argument("file", type=click.File("rb"))
@api_url_option
@click.option("--direct", is_flag=True, help="Publish straight to LATAM_BROKER_URL, not over HTTP.")
@click.option("--create", is_flag=True, help="Create the topic when it does not exist.")
@ranged_option("--batch-size", click.IntRange(1, 1000), 500, "Messages per request.")
@ranged_option("--concurrency", click.IntRange(1, 64), 4, "Batches in flight at once.")
@click.option(
    "--id-field",
    help="Take each message's idempotency key from this field of the record, so that "
    "loading the same file again stores nothing twice.",
)
@click.option("--strict", is_flag=True, help="Stop at the first malformed record.")
@api_key_option
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
