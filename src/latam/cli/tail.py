"""``latam tail``: follow a topic's live stream in the terminal, one message per line."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click
import orjson

from latam.cli.common import api_key_option, api_url_option, fail, load_settings

if TYPE_CHECKING:  # httpx is loaded when the command runs, not for --help
    import httpx

# Reconnects after a network error wait this long, doubling up to the cap (s).
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 10.0
# Ends of a stream the server asks the client to recover from by reconnecting.
RETRIED = {429, 500, 502, 503, 504}


class Stopped(Exception):
    """The server refused the stream for good: the message to print."""


def parse_filter_args(args: tuple[str, ...]) -> list[tuple[str, str]]:
    """``data.x=eq.1`` arguments as query parameters."""
    pairs = []
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name:
            fail(f"{arg!r} is not a filter: use FIELD=OP.VALUE, e.g. data.flight=eq.LA800")
        pairs.append((name, value))
    return pairs


def problem_message(body: bytes, status: int) -> str:
    """A problem's detail and the fields it names, else the status."""
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"HTTP {status}"
    if not isinstance(problem, dict):
        return f"HTTP {status}"
    fields = sorted({str(e.get("field")) for e in problem.get("errors") or [] if e.get("field")})
    named = f" ({', '.join(fields)})" if fields else ""
    return f"{problem.get('detail') or problem.get('title') or f'HTTP {status}'}{named}"


class Follower:
    """One stream followed across reconnects: it resumes after the last event printed."""

    def __init__(self, client: httpx.Client, path: str, params: list[tuple[str, str]]):
        self.client, self.path, self.params = client, path, params
        self.last_id: str | None = None

    def connect(self) -> bool:
        """Print the stream until it ends (True), or False when it was refused for now."""
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        params = self.params
        if self.last_id:  # the header wins; a stale ?cursor= would only confuse a reader
            params = [(k, v) for k, v in params if k not in {"cursor", "from"}]
        import httpx

        query = httpx.QueryParams(tuple(params))
        with self.client.stream("GET", self.path, params=query, headers=headers) as response:
            if response.status_code != 200:
                message = problem_message(response.read(), response.status_code)
                if response.status_code in RETRIED:
                    click.echo(f"latam: {message}; retrying", err=True)
                    return False
                raise Stopped(message)
            return self._read(response)

    def _read(self, response: httpx.Response) -> bool:
        event, data, event_id = "message", [], None
        for line in response.iter_lines():
            if line:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    event_id = value
                continue
            if event == "message" and data:
                sys.stdout.write("\n".join(data) + "\n")
                sys.stdout.flush()
                self.last_id = event_id or self.last_id
            elif event == "error":
                ending = orjson.loads("\n".join(data) or "{}")
                if ending.get("status") not in RETRIED:
                    raise Stopped(problem_message("\n".join(data).encode(), 0))
                click.echo(f"latam: {ending.get('detail')}; reconnecting", err=True)
            event, data, event_id = "message", [], None
        return True


def follow(base: str, api_key: str | None, topic: str, params: list[tuple[str, str]]) -> None:
    """Follow ``topic`` (a name, or an id) until Ctrl-C or a refusal."""
    import httpx

    from latam.errors import NotFound
    from latam.loader import http_topic_id

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    # The read timeout outlasts the server's heartbeat (15 s by default) several times.
    timeout = httpx.Timeout(10.0, read=60.0)
    with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
        try:
            topic_id = http_topic_id(client, topic, create=False, hint="")
        except NotFound:
            if not topic.isdigit():
                raise
            topic_id = int(topic)
        except httpx.HTTPError as exc:
            raise Stopped(f"cannot look up topic {topic!r} at {base}: {exc}") from exc
        follower = Follower(client, f"/v1/topics/{topic_id}/stream", params)
        backoff = FIRST_BACKOFF
        while True:
            try:
                streamed = follower.connect()
            except (httpx.TransportError, httpx.DecodingError) as exc:
                click.echo(f"latam: connection lost ({exc}); reconnecting", err=True)
                streamed = False
            # Back off only while connecting fails; a stream that ran resumes at once.
            backoff = FIRST_BACKOFF if streamed else min(backoff * 2, MAX_BACKOFF)
            time.sleep(FIRST_BACKOFF if streamed else backoff)


@click.command()
@click.argument("topic")
@click.argument("filters", nargs=-1)
@click.option("--from-start", is_flag=True, help="Replay the topic from its first message.")
@click.option("--cursor", help="Start after this message (a page's cursor or an event id).")
@api_url_option
@api_key_option
def tail(
    topic: str,
    filters: tuple[str, ...],
    from_start: bool,
    cursor: str | None,
    url: str | None,
    api_key: str | None,
) -> None:
    """Print TOPIC's messages as they are stored, one JSON object per line.

    TOPIC is a name (or an id). FILTERS are field filters as on reads, e.g.
    data.flight=eq.LA800 'data.delay_min=gte.15'. Without --from-start or --cursor it
    starts with what is stored next. After a network error it reconnects and resumes
    after the last message printed, so none is lost or printed twice. Ctrl-C stops it
    (exit 0); a refused stream (a bad filter, a missing topic) exits 1.
    """
    from latam.errors import LatamError

    settings = load_settings()
    params = parse_filter_args(filters)
    if cursor:
        params.append(("cursor", cursor))
    elif from_start:
        params.append(("from", "start"))
    base = url or f"http://{settings.host}:{settings.port}"
    try:
        follow(base, api_key, topic, params)
    except KeyboardInterrupt:
        sys.exit(0)
    except BrokenPipeError:  # piped into a reader that stopped (head)
        sys.stderr.close()
        sys.exit(0)
    except (Stopped, LatamError) as exc:
        fail(exc.detail if isinstance(exc, LatamError) else str(exc), code=1)
