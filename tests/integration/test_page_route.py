"""``PageRoute`` answers exactly what ``read_messages`` answers: the same requests, plain
and hostile, against the app and against the same app without ``PageRoute``, on one
SQLite store, with authentication off and on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from latam.api.app import create_app
from latam.api.messages import PLAIN_PAGE, PageRoute, plain_page_query
from latam.bootstrap import build_keys, build_service
from latam.domain import NewMessage, Position, encode_cursor
from latam.keys import KeyVerifier, create_key
from latam.settings import Settings
from latam.storage import migrate

BASE = datetime(2026, 6, 1, tzinfo=UTC)
IGNORED = {"x-request-id", "date"}


def pair(tmp_path: Path, **overrides: object) -> tuple[TestClient, TestClient, KeyVerifier]:
    """The app, and an app of the same store without PageRoute; and the key verifier."""
    settings = Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    apps = []
    for _ in range(2):
        service = build_service(settings)
        migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
        keys = build_keys(settings, service.store)
        apps.append(create_app(service, settings, keys))
    without = apps[1].router.routes
    without[:] = [route for route in without if not isinstance(route, PageRoute)]
    assert any(isinstance(route, PageRoute) for route in apps[0].router.routes)
    return TestClient(apps[0]), TestClient(apps[1]), keys


def fill(tmp_path: Path) -> tuple[int, int]:
    service = build_service(Settings(data_dir=tmp_path))
    store = service.store
    migrate.upgrade(store.engine)  # type: ignore[attr-defined]
    first, other = store.create_topic("flights").id, store.create_topic("crews").id
    ids = ["plain", 'quo"te', "back\\slash", "ünï", "same"]
    rows = [
        (
            first,
            NewMessage(
                "flights",
                f"{ids[n % 5]}-{n}",
                f'{{"n":{n},"s":"a\\"b"}}',
                {"source": "ops"} if n % 3 else {},
                BASE + timedelta(seconds=n // 7),
            ),
        )
        for n in range(250)
    ]
    rows += [(other, NewMessage("crews", f"plain-{n}", f'{{"c":{n}}}')) for n in range(5)]
    store.write_messages(rows)
    store.close()
    return first, other


def same(fast: TestClient, slow: TestClient, method: str, url: str, **kwargs: object) -> int:
    ours = fast.request(method, url, **kwargs)  # type: ignore[arg-type]
    theirs = slow.request(method, url, **kwargs)  # type: ignore[arg-type]
    assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content), url
    headers = {k: v for k, v in ours.headers.items() if k not in IGNORED}
    assert headers == {k: v for k, v in theirs.headers.items() if k not in IGNORED}, url
    return ours.status_code


def queries(topic: int, other: int) -> list[str]:
    cursor = encode_cursor(topic, 100)
    return [
        "",
        "?limit=5",
        "?limit=1000",
        f"?cursor={cursor}",
        f"?limit=7&cursor={cursor}",
        f"?cursor={cursor}&limit=7",
        f"?cursor={encode_cursor(topic, 10**6)}",
        "?limit=1001",
        "?limit=0",
        "?limit=05",
        "?limit=-1",
        "?limit=%2B5",
        "?limit=+5",
        "?limit=1_0",
        "?limit=",
        "?limit",
        "?limit=abc",
        "?limit=5&limit=6",
        "?limit=99999999999999999999999",
        f"?cursor={encode_cursor(other, 1)}",
        f"?cursor={Position(3, BASE).encode(topic)}",
        "?cursor=garbage",
        "?cursor=",
        "?cursor=" + "a" * 201,
        f"?cursor={cursor}%3D",
        f"?cursor={cursor}&cursor={cursor}",
        "?data.n=eq.5",
        "?data.n=gte.100&limit=3",
        "?unknown=1",
        "?limit=5&",
        "?&",
        "?since=2026-06-01T00:00:00Z&limit=3",
        "?until=not-a-time",
    ]


@pytest.fixture
def data(tmp_path: Path) -> tuple[int, int]:
    return fill(tmp_path)


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths and queries PageRoute answered itself."""
    urls: list[str] = []
    handle = PageRoute.handle

    async def counted(self: PageRoute, scope: Any, receive: Any, send: Any) -> None:
        urls.append(f"{scope['path']}?{scope['query_string'].decode()}")
        await handle(self, scope, receive, send)

    monkeypatch.setattr(PageRoute, "handle", counted)
    return urls


def test_every_request_gets_the_answer_of_read_messages(
    tmp_path: Path, data: tuple[int, int], taken: list[str]
) -> None:
    topic, other = data
    fast, slow, _ = pair(tmp_path)
    paths = [f"/v1/topics/{topic}/messages", f"/v1/topics/{other}/messages"]
    paths += [
        "/v1/topics/999/messages",
        "/v1/topics/0/messages",
        f"/v1/topics/0{topic}/messages",
        "/v1/topics/9223372036854775807/messages",
        "/v1/topics/99999999999999999999/messages",
        "/v1/topics/abc/messages",
        f"/v1/topics/{topic}/messages/",
    ]
    statuses: dict[int, int] = {}
    plain = []
    with fast, slow:
        for path in paths:
            for query in queries(topic, other):
                for method in ("GET", "HEAD"):
                    code = same(fast, slow, method, path + query)
                    statuses[code] = statuses.get(code, 0) + 1
                    # A trailing slash is redirected, and the client follows.
                    raw, target = query.removeprefix("?").encode(), path.rstrip("/")
                    if method == "GET" and PLAIN_PAGE.fullmatch(target) and plain_page_query(raw):
                        plain.append(f"{target}?{raw.decode()}")
    # PageRoute answered the plain reads (of a topic, of another, of a missing one), and
    # read_messages every other request: refusals and errors of every kind.
    assert taken == plain
    assert len(plain) >= 20
    assert {200, 400, 404, 405, 422} <= statuses.keys(), statuses


def served(status_class: str) -> float:
    labels = {"method": "GET", "route": PageRoute.path, "status_class": status_class}
    return REGISTRY.get_sample_value("latam_http_requests_total", labels) or 0.0


def test_a_long_walk_reads_the_same_pages(tmp_path: Path, data: tuple[int, int]) -> None:
    """Every page, and each request counted under the route's template."""
    topic, _ = data
    fast, slow, _ = pair(tmp_path)
    pages = 0
    before = served("2xx")
    with fast, slow:
        url: str | None = f"/v1/topics/{topic}/messages?limit=17"
        while url:
            same(fast, slow, "GET", url)
            cursor = fast.get(url).json()["next_cursor"]
            url = cursor and f"/v1/topics/{topic}/messages?limit=17&cursor={cursor}"
            pages += 1
    assert pages == 15  # 250 messages, 17 a page
    assert served("2xx") - before == 3 * pages  # fast twice a page, slow once


@pytest.fixture
def keyed(
    tmp_path: Path, data: tuple[int, int]
) -> Iterator[tuple[TestClient, TestClient, KeyVerifier]]:
    fast, slow, keys = pair(tmp_path, auth="on")
    with fast, slow:
        yield fast, slow, keys


def test_keys_scopes_and_topics_are_checked_alike(
    data: tuple[int, int], keyed: tuple[TestClient, TestClient, KeyVerifier]
) -> None:
    topic, other = data
    fast, slow, keys = keyed
    tokens = {
        "reader": create_key(keys.store, name="reader", scopes=["read"])[1],
        "publisher": create_key(keys.store, name="publisher", scopes=["publish"])[1],
        "bound": create_key(keys.store, name="bound", scopes=["read"], topics=[other])[1],
    }
    statuses = []
    for token in [None, "nonsense", *tokens.values()]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for query in ("", "?limit=3", "?limit=0"):
            url = f"/v1/topics/{topic}/messages{query}"
            statuses.append(same(fast, slow, "GET", url, headers=headers))
    assert {200, 401, 403, 422} <= set(statuses), statuses
