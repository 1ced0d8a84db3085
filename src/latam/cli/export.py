"""``latam export``: a topic's messages streamed from the API into a file.

The file is written as ``FILE.partial`` and renamed to ``FILE`` only once the whole
transfer arrived, so an export cut short never leaves a file that looks complete.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import click

from latam.cli.common import api_key_option, api_url_option, fail, load_settings

FORMATS = ("ndjson", "csv", "parquet")
EXTENSIONS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv", ".parquet": "parquet"}
PLAIN_PROGRESS_SECONDS = 5.0
ERROR_LINE = b'{"error":'


class Refused(Exception):
    """The API answered with an error status: nothing was exported."""


class Cut(Exception):
    """The transfer started and did not complete."""


class Meter:
    """Bytes (and NDJSON lines) received: a live line on a terminal, else one every
    few seconds, on stderr."""

    def __init__(self) -> None:
        self.started = self.shown = time.monotonic()
        self.bytes = self.lines = 0
        self.tty = sys.stderr.isatty()

    def add(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        self.lines += chunk.count(b"\n")
        now = time.monotonic()
        if now - self.shown >= (0.2 if self.tty else PLAIN_PROGRESS_SECONDS):
            self.shown = now
            if self.tty:
                click.echo(f"\r{self.text()}\033[K", err=True, nl=False)
            else:
                click.echo(self.text(), err=True)

    def text(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return f"{self.bytes / 1e6:,.1f} MB received ({self.bytes / 1e6 / elapsed:,.1f} MB/s)"

    def done(self) -> None:
        if self.tty:
            click.echo("\r\033[K", err=True, nl=False)


def _problem(response: Any) -> str:
    """``field: message`` for each error of a problem+json answer, else its detail."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    errors = body.get("errors") or []
    lines = [f"{e['field']}: {e['message']}" for e in errors if e.get("field")]
    return "; ".join(lines) or f"HTTP {response.status_code}: {body.get('detail', '')}"


def _params(opts: dict[str, Any], filters: tuple[str, ...]) -> list[tuple[str, str]]:
    params = [("format", opts["format"])]
    params += [(name, opts[name]) for name in ("since", "until", "fields") if opts[name]]
    for item in filters:
        name, eq, value = item.partition("=")
        if not eq or not name:
            fail(f"{item!r}: a filter is FIELD=OP.VALUE, e.g. data.flight=eq.LA800")
        params.append((name, value))
    return params


def download(client: Any, path: str, params: list[tuple[str, str]], out: IO[bytes]) -> Meter:
    """Stream the export into ``out``; Refused or Cut saying why when it fails."""
    import httpx

    meter = Meter()
    tail = b""
    try:
        with client.stream("GET", path, params=params) as response:
            if response.status_code != 200:
                response.read()
                raise Refused(_problem(response))
            for chunk in response.iter_bytes():
                out.write(chunk)
                meter.add(chunk)
                tail = (tail + chunk)[-65536:]
    except httpx.HTTPError as exc:
        meter.done()
        last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        if last.startswith(ERROR_LINE):
            import orjson

            detail = orjson.loads(last)["error"].get("detail")
            raise Cut(f"the export failed after {meter.bytes:,} bytes: {detail}") from exc
        raise Cut(
            f"the transfer was cut after {meter.bytes:,} bytes ({type(exc).__name__})"
        ) from exc
    meter.done()
    return meter


def check_output(path: Path) -> None:
    """Refuse, before any transfer, an OUTPUT that cannot be written: a directory, or a
    file in a directory that does not exist."""
    if path.is_dir():
        fail(f"-o: {path} is a directory; name a file", code=2)
    if not path.parent.is_dir():
        fail(f"-o: the directory {path.parent} does not exist", code=2)


def nulled_warning(path: Path) -> str | None:
    """What a Parquet export wrote as null (``latam.nulled`` in its footer), if anything."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    meta = pq.ParquetFile(path).metadata.metadata or {}
    if b"latam.nulled" not in meta:
        return None
    import orjson

    counts = orjson.loads(meta[b"latam.nulled"])
    listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
    return f"values of another type than their column's were written as null ({listed})"


@click.command()
@click.argument("topic")
@click.argument("filters", nargs=-1)
@click.option("-o", "--output", required=True, help="File to write (- for stdout).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Default: from the file's extension (.ndjson/.jsonl, .csv, .parquet), else ndjson.",
)
@click.option("--since", help="Only messages published at or after this time (ISO 8601).")
@click.option("--until", help="Only messages published before this time (ISO 8601).")
@click.option("--fields", help="Comma-separated fields: message_id,published_at,data.flight,...")
@api_url_option
@api_key_option
def export(
    topic: str,
    filters: tuple[str, ...],
    output: str,
    fmt: str | None,
    since: str | None,
    until: str | None,
    fields: str | None,
    url: str | None,
    api_key: str | None,
) -> None:
    """Export TOPIC's messages to a file, streamed through the API.

    FILTERS are field filters as on reads, e.g. data.flight=eq.LA800 data.delay_min=gte.15.
    Exits 1, leaving OUTPUT.partial, when the transfer does not complete (130 on Ctrl-C).
    An existing OUTPUT is replaced only once the whole export arrived.
    """
    import httpx

    from latam.errors import NotFound
    from latam.loader import http_topic_id

    settings = load_settings()
    if output != "-":
        check_output(Path(output))
    fmt = fmt or EXTENSIONS.get(Path(output).suffix.lower(), "ndjson")
    opts = {"format": fmt, "since": since, "until": until, "fields": fields}
    params = _params(opts, filters)
    base = url or f"http://{settings.host}:{settings.port}"
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = httpx.Timeout(60, connect=10)
    with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
        try:
            topic_id = http_topic_id(client, topic, create=False, hint="")
        except NotFound as exc:
            fail(f"TOPIC: {exc.detail}", code=1)
        except httpx.HTTPError as exc:
            fail(f"cannot look up topic {topic!r} at {base}: {exc}", code=1)
        path = f"/v1/topics/{topic_id}/export"
        partial = Path(f"{output}.partial")
        try:
            if output == "-":
                download(client, path, params, sys.stdout.buffer)
                return
            with partial.open("wb") as out:
                meter = download(client, path, params, out)
        except Refused as exc:
            partial.unlink(missing_ok=True)
            fail(str(exc), code=1)
        except Cut as exc:
            kept = "" if output == "-" else f"; {partial} is incomplete"
            fail(f"{exc}{kept}", code=1)
        except KeyboardInterrupt:
            kept = "" if output == "-" else f"; {partial} is incomplete"
            fail(f"interrupted{kept}", code=130)
        except OSError as exc:
            fail(f"-o: cannot write {exc.filename or output}: {exc.strerror or exc}", code=1)
    try:
        os.replace(partial, output)
    except OSError as exc:
        fail(f"-o: cannot write {output}: {exc.strerror or exc}; {partial} is complete", code=1)
    rows = f"{meter.lines:,} rows, " if fmt == "ndjson" else ""
    elapsed = time.monotonic() - meter.started
    click.echo(f"exported {rows}{meter.bytes:,} bytes to {output} in {elapsed:.1f}s", err=True)
    if fmt == "parquet" and (warning := nulled_warning(Path(output))):
        click.echo(f"latam: warning: {warning}", err=True)
