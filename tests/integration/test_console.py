"""The web console (/console) through the real app: every page on SQLite, PostgreSQL and
MariaDB (one app per store, keys required), and its sessions, CSRF tokens, scopes and
escaping. The server stores skip locally without their server and fail under CI
(tests/databases.py)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from latam.api.app import create_app
from latam.bootstrap import build_keys, build_service
from latam.console import gate as console_gate
from latam.domain import NewMessage, Position
from latam.errors import NotFound
from latam.keys import KeyVerifier, create_key
from latam.service import Service
from latam.settings import Settings
from latam.storage import migrate
from tests.contract.brokers import SqliteHarness
from tests.databases import STORES, temporary_database
from tests.support import unique

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
COOKIE = "latam_console"
HOSTILE = "<script>alert(1)</script>"
SCHEMA = {"type": "object", "required": ["flight"], "properties": {"flight": {"type": "string"}}}


@dataclass
class Deployment:
    """One app and the client that talks to it (cookies switched per visitor)."""

    app: FastAPI
    client: TestClient
    service: Service
    keys: KeyVerifier
    settings: Settings
    admin: str = ""  # the admin's session cookie

    def as_visitor(self, cookie: str | None) -> TestClient:
        self.client.cookies.clear()
        if cookie:
            self.client.cookies.set(COOKIE, cookie, domain="testserver.local", path="/console")
        return self.client

    def as_admin(self) -> TestClient:
        return self.as_visitor(self.admin)

    def key(self, *scopes: str, topics: list[int] | None = None) -> str:
        return create_key(self.keys.store, name=unique("k-"), scopes=scopes, topics=topics)[1]

    def topic(self, name: str | None = None) -> int:
        return self.service.create_topic(name=name or unique("t-")).id

    def store(self, topic_id: int, *items: tuple[str, dict[str, Any], dict[str, str]]) -> None:
        name = self.service.get_topic(topic_id=topic_id).name
        self.service.store.write_messages(
            [
                (topic_id, NewMessage(name, mid, orjson.dumps(data).decode(), attrs))
                for mid, data, attrs in items
            ]
        )

    def dead_letter(self, topic: str, body: bytes, reason: str = "invalid_json") -> str:
        """A dead letter of ``topic`` with ``body``, as the worker would set it aside."""
        message_id = unique("m-")
        SqliteHarness(self.settings.data_dir / "broker.db").publish_raw(
            body, {"topic": topic, "message_id": message_id}
        )
        broker = self.service.broker
        deliveries = broker.pull(max_messages=1000, timeout=1)
        mine = [d for d in deliveries if d.attributes.get("message_id") == message_id]
        broker.ack([d for d in deliveries if d not in mine])
        broker.dead_letter(mine, reason=reason)
        return next(
            d.id for d in broker.list_dead_letters(limit=1000) if d.message_id == message_id
        )

    def queued(self) -> list[tuple[bytes, dict[str, str]]]:
        """What waits on the broker now (taken off it)."""
        deliveries = self.service.broker.pull(max_messages=1000, timeout=0.2)
        self.service.broker.ack(deliveries)
        return [(d.body, dict(d.attributes)) for d in deliveries]


def build(tmp_path: Path, **overrides: Any) -> tuple[FastAPI, Service, KeyVerifier, Settings]:
    settings = Settings(data_dir=tmp_path, **overrides)
    service = build_service(settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    keys = build_keys(settings, service.store)
    return create_app(service, settings, keys), service, keys, settings


def csrf_of(response: Response) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', response.text)
    if found is None:
        found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, response.text[:500]
    return found[1]


def sign_in(client: TestClient, token: str) -> Response:
    form = client.get("/console/login")
    return client.post(
        "/console/login", data={"key": token, "csrf": csrf_of(form)}, follow_redirects=False
    )


def signed_in_cookie(deployment: Deployment, token: str) -> str:
    client = deployment.as_visitor(None)
    assert sign_in(client, token).status_code == 303
    return client.cookies[COOKIE]


@pytest.fixture(scope="module", params=STORES)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """An app on each store with keys required, an admin signed in."""
    tmp = tmp_path_factory.mktemp(request.param)
    with temporary_database(request.param, tmp) as url:
        app, service, keys, settings = build(tmp, database_url=url, auth="on")
        with TestClient(app, base_url="https://testserver.local") as client:
            found = Deployment(app, client, service, keys, settings)
            found.admin = signed_in_cookie(found, found.key("admin"))
            yield found
        service.store.close()
        service.broker.close()


@pytest.fixture
def sqlite_deployment(tmp_path: Path) -> Iterator[Deployment]:
    app, service, keys, settings = build(tmp_path, auth="on")
    with TestClient(app, base_url="https://testserver.local") as client:
        found = Deployment(app, client, service, keys, settings)
        found.admin = signed_in_cookie(found, found.key("admin"))
        yield found


def assert_console_page(response: Response) -> str:
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-security-policy"] == CSP
    assert response.headers.get_list("content-security-policy") == [CSP]
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html), "inline style or handler"
    return html


# -- every page, on every store ---------------------------------------------------------
def test_every_page_renders(deployment: Deployment) -> None:
    topic_id = deployment.topic()
    topic = deployment.service.get_topic(topic_id=topic_id).name
    deployment.store(topic_id, ("a-1", {"flight": "LA800"}, {"source": "ops"}))
    letter = deployment.dead_letter(topic, b"\xff\xfe not utf-8")
    key_id = deployment.key("read").split("_")[1]
    client = deployment.as_admin()
    topic_page = assert_console_page(client.get(f"/console/topics/{topic_id}"))
    tail = re.search(r'hx-get="(/console/topics/\d+/tail\?cursor=[^"]+)"', topic_page)
    assert tail is not None
    pages = [
        tail[1],
        "/console",
        "/console/topics",
        f"/console/topics/{topic_id}?bucket=minute",
        f"/console/topics/{topic_id}?bucket=day&since=2000-01-01T00:00:00",
        f"/console/topics/{topic_id}/delete",
        "/console/dead-letters",
        f"/console/dead-letters?topic={topic}&reason=invalid_json",
        f"/console/dead-letters/{letter}",
        f"/console/dead-letters/confirm?action=purge&ids={letter}",
        "/console/keys",
        f"/console/keys/{key_id}/revoke",
    ]
    for path in pages:
        assert_console_page(client.get(path))
    overview = client.get("/console/overview", headers={"HX-Request": "true"})
    assert 'id="overview"' in assert_console_page(overview)
    detail = client.get(f"/console/dead-letters/{letter}").text
    assert "Not UTF-8: shown as base64" in detail
    assert "//4gbm90IHV0Zi04" in detail
    for selector in ('action="/console/logout"', 'href="/console/keys"', 'id="tail-pause"'):
        assert selector in topic_page


def test_overview_says_what_it_cannot_know(deployment: Deployment) -> None:
    html = assert_console_page(deployment.as_admin().get("/console"))
    for figure in ("Ingest rate", "Freshness p99", "Backlog", "Dead letters by reason"):
        assert figure in html
    assert "messages waiting on the broker (sqlite)" in html  # the embedded queue can tell
    assert "no Prometheus" in html  # SLOs from this instance's counters, and it says so
    assert 'data-chart="{' in html
    assert "Messages published per minute" in html


def test_live_tail_goes_on_from_its_cursor(deployment: Deployment) -> None:
    topic_id = deployment.topic()
    deployment.store(topic_id, ("old", {"n": 0}, {}))
    client = deployment.as_admin()
    page = client.get(f"/console/topics/{topic_id}").text
    url = re.search(r'id="tail-poller" hx-get="([^"]+)"', page)
    assert url is not None
    seen: list[str] = []
    tail_url = url[1].replace("&amp;", "&")
    for batch in (["n1", "n2", "n3"], [], ["n4"]):
        deployment.store(topic_id, *((mid, {"n": mid}, {}) for mid in batch))
        part = client.get(tail_url, headers={"HX-Request": "true"})
        assert part.status_code == 200
        seen += re.findall(r'data-message-id="([^"]+)"', part.text)
        tail_url = re.findall(r'hx-get="([^"]+)"', part.text)[-1].replace("&amp;", "&")
    assert seen == ["n1", "n2", "n3", "n4"], "the tail missed or repeated a message"


def test_the_browser_filters_and_pages_with_its_filters(deployment: Deployment) -> None:
    topic_id = deployment.topic()
    deployment.store(
        topic_id,
        *((f"m{n}", {"flight": "LA800" if n % 2 else "LA801", "delay": n}, {}) for n in range(8)),
    )
    client = deployment.as_admin()
    where = "data.flight=eq.LA800 data.delay=gte.3"
    first = client.get(f"/console/topics/{topic_id}", params={"where": where})
    html = assert_console_page(first)
    assert re.findall(r'data-message-id="([^"]+)"', html) == ["m3", "m5", "m7"]
    assert 'value="data.flight=eq.LA800 data.delay=gte.3"' in html
    bad = client.get(f"/console/topics/{topic_id}", params={"where": "data.flight=like.LA"})
    assert bad.status_code == 422
    assert "where: data.flight:" in bad.text
    assert "no known operator" in bad.text


def test_topic_create_rename_delete(deployment: Deployment) -> None:
    client = deployment.as_admin()
    token = csrf_of(client.get("/console/topics"))
    name = unique("made-")
    made = client.post(
        "/console/topics", data={"name": name, "csrf": token}, follow_redirects=False
    )
    assert made.status_code == 303
    topic_id = int(made.headers["location"].split("?")[0].rsplit("/", 1)[1])
    taken = client.post("/console/topics", data={"name": name, "csrf": token})
    assert taken.status_code == 409
    assert "already exists" in taken.text
    renamed = client.post(
        f"/console/topics/{topic_id}/rename", data={"name": f"{name}-2", "csrf": token}
    )
    assert renamed.status_code == 200
    assert f"{name}-2" in renamed.text
    deployment.store(topic_id, ("x1", {}, {}), ("x2", {}, {}))
    confirm = assert_console_page(client.get(f"/console/topics/{topic_id}/delete"))
    assert f"{name}-2" in confirm
    assert "<strong>2</strong> stored messages" in confirm
    assert 'name="confirm"' in confirm
    unconfirmed = client.post(
        f"/console/topics/{topic_id}/delete", data={"csrf": token}, follow_redirects=False
    )
    assert unconfirmed.status_code == 303
    assert deployment.service.get_topic(topic_id=topic_id).name == f"{name}-2"
    deleted = client.post(
        f"/console/topics/{topic_id}/delete", data={"csrf": token, "confirm": "yes"}
    )
    assert deleted.status_code == 200
    assert "The topic was deleted." in deleted.text
    with pytest.raises(NotFound):
        deployment.service.get_topic(topic_id=topic_id)


def test_hostile_names_and_bodies_are_escaped(deployment: Deployment) -> None:
    name = unique(HOSTILE)
    topic_id = deployment.topic(name)
    body = {"note": "</pre><script>alert(2)</script>", "q": '" onmouseover="x'}
    deployment.store(topic_id, (unique('"><img src=x onerror=alert(3)>'), body, {"a": HOSTILE}))
    letter = deployment.dead_letter(name, b'{"x": "</textarea><script>alert(4)</script>"}')
    client = deployment.as_admin()
    page = client.get(f"/console/topics/{topic_id}")
    tail = client.get(
        f"/console/topics/{topic_id}/tail", params={"cursor": Position(0).encode(topic_id)}
    )
    for response in (
        client.get("/console/topics"),
        page,
        tail,
        client.get("/console/dead-letters"),
        client.get(f"/console/dead-letters/{letter}"),
        client.get(f"/console/topics/{topic_id}/delete"),
    ):
        html = response.text
        assert response.status_code == 200, html[:500]
        assert "<script>alert" not in html
        assert "<img src=x" not in html
        assert "</textarea><script>" not in html
        assert "</pre><script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_dead_letter_fix_and_replay(deployment: Deployment) -> None:
    name = unique("delays-")
    topic_id = deployment.topic(name)
    deployment.service.put_schema(topic_id=topic_id, schema=SCHEMA, compatibility="backward")
    letter = deployment.dead_letter(name, b'{"flight": 800}', reason="schema_violation")
    client = deployment.as_admin()
    detail = assert_console_page(client.get(f"/console/dead-letters/{letter}"))
    assert 'action="/console/dead-letters/' in detail
    assert 'name="data"' in detail
    assert "{\n  &#34;flight&#34;: 800\n}</textarea>" in detail  # prefilled, indented
    token = csrf_of(client.get(f"/console/dead-letters/{letter}"))
    path = f"/console/dead-letters/{letter}/replay"
    violates = client.post(path, data={"data": '{"flight": 801}', "csrf": token})
    assert violates.status_code == 422
    assert "/data/flight" in violates.text
    assert "fail the topic&#39;s schema" in violates.text
    assert "{&#34;flight&#34;: 801}" in violates.text  # what was typed stays in the form
    broken = client.post(path, data={"data": "{not json", "csrf": token})
    assert broken.status_code == 422
    assert "not valid JSON" in broken.text
    fixed = client.post(
        path,
        data={"data": '{"flight": "LA800"}', "attributes": "", "csrf": token},
        follow_redirects=False,
    )
    assert fixed.status_code == 303
    assert "done=corrected" in fixed.headers["location"]
    assert client.get(f"/console/dead-letters/{letter}").status_code == 404
    bodies = [(orjson.loads(body), attrs.get("topic")) for body, attrs in deployment.queued()]
    assert ({"flight": "LA800"}, name) in bodies


def test_replay_and_purge_a_selection(deployment: Deployment) -> None:
    topic = deployment.topic()
    name = deployment.service.get_topic(topic_id=topic).name
    first, second = (deployment.dead_letter(name, b"not json") for _ in range(2))
    client = deployment.as_admin()
    listed = client.get("/console/dead-letters", params={"topic": name}).text
    assert f'data-letter-id="{first}"' in listed
    assert f'data-letter-id="{second}"' in listed
    confirm = client.get(
        "/console/dead-letters/confirm", params=[("action", "purge"), ("ids", first)]
    )
    html = assert_console_page(confirm)
    assert 'action="/console/dead-letters/purge-selected"' in html
    assert 'name="confirm"' in html
    token = csrf_of(confirm)
    kept = client.post("/console/dead-letters/purge-selected", data={"ids": first, "csrf": token})
    assert kept.status_code == 200
    assert f'data-letter-id="{first}"' in kept.text
    purged = client.post(
        "/console/dead-letters/purge-selected",
        data={"ids": first, "csrf": token, "confirm": "yes"},
    )
    assert "Dead letters purged: 1." in purged.text
    replayed = client.post(
        "/console/dead-letters/replay-selected",
        data={"ids": second, "csrf": token, "confirm": "yes"},
    )
    assert "Dead letters replayed: 1." in replayed.text
    assert f'data-letter-id="{second}"' not in replayed.text
    assert any(body == b"not json" for body, _ in deployment.queued())


def test_a_new_key_is_shown_once(deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    client = deployment.as_admin()
    token = csrf_of(client.get("/console/keys"))
    with caplog.at_level(logging.INFO, logger="latam.audit"):
        made = client.post(
            "/console/keys",
            data={"name": "ops", "scopes": ["read", "publish"], "csrf": token},
            follow_redirects=False,
        )
    assert made.status_code == 303
    shown = assert_console_page(client.get(made.headers["location"]))
    secret = re.search(r'<code id="new-key">(lt_[^<]+)</code>', shown)
    assert secret is not None
    assert 'id="copy-key"' in shown
    assert deployment.keys.verify(secret[1]) is not None
    again = client.get("/console/keys").text
    assert secret[1] not in again
    assert 'id="new-key"' not in again
    assert secret[1].split("_")[1] in again  # listed by id, never by secret
    assert all(
        secret[1] not in record.getMessage() + str(record.__dict__) for record in caplog.records
    )
    assert any(getattr(r, "action", "") == "API key created" for r in caplog.records)


# -- sessions, CSRF, scopes ------------------------------------------------------------
def test_sign_in_sets_a_strict_session_cookie(sqlite_deployment: Deployment) -> None:
    client = sqlite_deployment.as_visitor(None)
    assert client.get("/console", follow_redirects=False).headers["location"] == "/console/login"
    answer = sign_in(client, sqlite_deployment.key("read"))
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console"
    cookie = answer.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=strict", "Secure", "Path=/console"):
        assert attribute.lower() in cookie.lower(), cookie
    assert client.get("/console").status_code == 200
    plain = TestClient(sqlite_deployment.app, base_url="http://testserver.local")
    form = plain.get("/console/login")
    data = {"key": sqlite_deployment.key("read"), "csrf": csrf_of(form)}
    http = plain.post("/console/login", data=data, follow_redirects=False)
    assert http.status_code == 303
    assert "secure" not in http.headers["set-cookie"].lower()


def test_a_wrong_key_is_a_form_error(sqlite_deployment: Deployment) -> None:
    client = sqlite_deployment.as_visitor(None)
    for token, error in (("lt_000000000000_" + "x" * 43, "not a valid API key"), ("", "enter")):
        answer = sign_in(client, token)
        assert answer.status_code == 401
        assert error in answer.text
        assert 'form method="post" action="/console/login"' in answer.text
        assert 'name="key"' in answer.text
    bound = sqlite_deployment.key("read", topics=[sqlite_deployment.topic()])
    assert "bound to topics" in sign_in(client, bound).text
    assert "no read scope" in sign_in(client, sqlite_deployment.key("publish")).text
    assert client.get("/console", follow_redirects=False).status_code == 303


def test_no_session_goes_to_sign_in_and_partials_get_401(sqlite_deployment: Deployment) -> None:
    client = sqlite_deployment.as_visitor(None)
    for path in ("/console", "/console/topics", "/console/keys", "/console/dead-letters"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/login"
    partial = client.get("/console/overview", headers={"HX-Request": "true"})
    assert partial.status_code == 401
    assert partial.headers["hx-redirect"] == "/console/login"
    forged = sqlite_deployment.as_visitor(sqlite_deployment.admin[:-4] + "AAAA")
    assert forged.get("/console", follow_redirects=False).status_code == 303


def test_a_post_without_its_csrf_token_is_403(sqlite_deployment: Deployment) -> None:
    client = sqlite_deployment.as_admin()
    name = unique("csrf-")
    other = signed_in_cookie(sqlite_deployment, sqlite_deployment.key("admin"))
    other_token = csrf_of(sqlite_deployment.as_visitor(other).get("/console"))
    client = sqlite_deployment.as_admin()
    for data, headers in (
        ({"name": name}, {}),
        ({"name": name, "csrf": "forged"}, {}),
        ({"name": name, "csrf": other_token}, {}),  # another session's token
        ({"name": name}, {"X-CSRF-Token": other_token}),
    ):
        answer = client.post("/console/topics", data=data, headers=headers)
        assert answer.status_code == 403, data
        assert answer.headers["content-security-policy"] == CSP
    own = csrf_of(client.get("/console"))
    headers = {"X-CSRF-Token": own}  # as htmx sends it
    made = client.post("/console/topics", data={"name": name}, headers=headers)
    assert made.status_code == 200
    assert "The topic was created." in made.text
    anonymous = sqlite_deployment.as_visitor(None)
    assert anonymous.post("/console/topics", data={"name": "x"}).status_code == 403
    assert anonymous.post("/console/topics", json={"name": "x"}).status_code == 403
    login = sqlite_deployment.as_visitor(None).post("/console/login", data={"key": "x"})
    assert login.status_code == 403


def test_a_read_only_key_cannot_write(sqlite_deployment: Deployment) -> None:
    cookie = signed_in_cookie(sqlite_deployment, sqlite_deployment.key("read"))
    client = sqlite_deployment.as_visitor(cookie)
    topic_id = sqlite_deployment.topic()
    assert client.get(f"/console/topics/{topic_id}").status_code == 200
    token = csrf_of(client.get("/console/topics"))
    for path, data in (
        ("/console/topics", {"name": "nope"}),
        (f"/console/topics/{topic_id}/rename", {"name": "nope"}),
        (f"/console/topics/{topic_id}/delete", {"confirm": "yes"}),
        ("/console/keys", {"name": "nope", "scopes": "admin"}),
    ):
        answer = client.post(path, data={**data, "csrf": token})
        assert answer.status_code == 403, path
        assert "admin scope" in answer.text, path
    for path in ("/console/keys", "/console/dead-letters", f"/console/topics/{topic_id}/delete"):
        assert client.get(path).status_code == 403, path
    assert sqlite_deployment.service.get_topic(topic_id=topic_id)


def test_a_revoked_key_ends_its_session(
    sqlite_deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = sqlite_deployment.key("read")
    cookie = signed_in_cookie(sqlite_deployment, reader)
    assert sqlite_deployment.as_visitor(cookie).get("/console").status_code == 200
    admin = sqlite_deployment.as_admin()
    key_id = reader.split("_")[1]
    token = csrf_of(admin.get(f"/console/keys/{key_id}/revoke"))
    revoked = admin.post(f"/console/keys/{key_id}/revoke", data={"csrf": token, "confirm": "yes"})
    assert revoked.status_code == 200
    assert "no longer works" in revoked.text
    refused = sqlite_deployment.as_visitor(cookie).get("/console", follow_redirects=False)
    assert refused.status_code == 303
    assert refused.headers["location"] == "/console/login"
    # Revoked elsewhere (`latam keys revoke`, another process): refused once the key is
    # read again, at most gate.KEY_SECONDS later; here at once.
    monkeypatch.setattr(console_gate, "KEY_SECONDS", 0.0)
    other = sqlite_deployment.key("read")
    cookie = signed_in_cookie(sqlite_deployment, other)
    sqlite_deployment.keys.store.revoke(other.split("_")[1])
    after = sqlite_deployment.as_visitor(cookie).get("/console", follow_redirects=False)
    assert after.status_code == 303


def test_sign_out_ends_the_session(
    sqlite_deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    key = sqlite_deployment.key("read")
    with caplog.at_level(logging.INFO, logger="latam.audit"):
        cookie = signed_in_cookie(sqlite_deployment, key)
        client = sqlite_deployment.as_visitor(cookie)
        token = csrf_of(client.get("/console"))
        assert client.post("/console/logout", data={}).status_code == 403
        out = client.post("/console/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login"
    assert (
        'latam_console=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    )
    assert client.get("/console", follow_redirects=False).status_code == 303
    actions = [getattr(r, "action", "") for r in caplog.records]
    assert "console sign-in" in actions
    assert "console sign-out" in actions
    assert all(key not in str(r.__dict__) for r in caplog.records)


@pytest.mark.parametrize(
    ("base_url", "client_host"),
    [
        ("http://rebind.attacker.example:8000", "127.0.0.1"),  # DNS rebinding
        ("http://127.0.0.1:8000", "203.0.113.9"),  # a proxy forwarding someone else
        ("http://localhost:8000", "testclient"),
    ],
)
def test_the_open_console_answers_only_this_machine_by_its_own_name(
    tmp_path: Path, base_url: str, client_host: str
) -> None:
    app, *_ = build(tmp_path, auth="off", host="127.0.0.1")
    with TestClient(app, base_url=base_url, client=(client_host, 50000)) as client:
        page = client.get("/console", follow_redirects=False)
        assert page.status_code == 403
        assert "answers only this machine" in page.text
        keys = client.post("/console/keys", data={"name": "planted", "scopes": "admin"})
        assert keys.status_code == 403
    for host in ("localhost", "127.0.0.1", "[::1]"):
        address = "::1" if host == "[::1]" else "127.0.0.1"
        with TestClient(app, base_url=f"http://{host}:8000", client=(address, 1)) as client:
            assert client.get("/console", follow_redirects=False).status_code == 200, host


def test_a_replayed_session_is_refused_after_sign_out(sqlite_deployment: Deployment) -> None:
    cookie = signed_in_cookie(sqlite_deployment, sqlite_deployment.key("admin"))
    client = sqlite_deployment.as_visitor(cookie)
    token = csrf_of(client.get("/console"))
    out = client.post("/console/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303
    replayed = sqlite_deployment.as_visitor(cookie)  # the old cookie, sent again
    assert replayed.get("/console/topics", follow_redirects=False).status_code == 303
    made = replayed.post(
        "/console/topics", data={"name": "after-sign-out", "csrf": token}, follow_redirects=False
    )
    assert made.status_code == 403
    assert "after-sign-out" not in [
        t.name for t in sqlite_deployment.service.list_topics(limit=50).items
    ]


def test_a_huge_form_is_refused_before_it_is_parsed(sqlite_deployment: Deployment) -> None:
    client = sqlite_deployment.as_visitor(None)
    body = b"key=" + b"%" * (2 * 1024 * 1024)
    started = time.perf_counter()
    answer = client.post(
        "/console/login",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413
    assert time.perf_counter() - started < 5  # refused, not parsed (seconds of CPU)
    cookie = sqlite_deployment.admin
    admin = sqlite_deployment.as_visitor(cookie)
    token = csrf_of(admin.get("/console/topics"))
    big = admin.post(
        "/console/topics",
        content=b"csrf=" + token.encode() + b"&name=" + b"a" * (1024 * 1024 + 1),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 413


@pytest.mark.parametrize("topics", ["\u00b2", "9" * 5000, "\u0661"])
def test_key_topics_take_ascii_ids_only(sqlite_deployment: Deployment, topics: str) -> None:
    client = sqlite_deployment.as_visitor(sqlite_deployment.admin)
    token = csrf_of(client.get("/console/keys"))
    answer = client.post(
        "/console/keys",
        data={"csrf": token, "name": "bound", "scopes": "read", "topics": topics},
        follow_redirects=False,
    )
    assert answer.status_code == 422, answer.text[:500]


def test_sessions_need_the_same_secret(tmp_path: Path) -> None:
    """One LATAM_CONSOLE_SECRET lets a session work on every API process; without it each
    process signs with its own, and a rotated bootstrap key ends its sessions."""
    shared = "s" * 40
    bootstrap = "b" * 40
    one = build(tmp_path, auth="on", console_secret=shared, bootstrap_api_key=bootstrap)[0]
    two = build(tmp_path, auth="on", console_secret=shared, bootstrap_api_key=bootstrap)[0]
    own = build(tmp_path, auth="on", bootstrap_api_key=bootstrap)[0]
    rotated = build(tmp_path, auth="on", console_secret=shared, bootstrap_api_key="c" * 40)[0]
    with TestClient(one, base_url="https://testserver.local") as first:
        assert sign_in(first, bootstrap).status_code == 303
        cookie = first.cookies[COOKIE]
    for app, works in ((two, True), (own, False), (rotated, False)):
        with TestClient(app, base_url="https://testserver.local") as other:
            other.cookies.set(COOKIE, cookie, domain="testserver.local", path="/console")
            answer = other.get("/console", follow_redirects=False)
            assert answer.status_code == (200 if works else 303)


@pytest.mark.parametrize(
    ("overrides", "open_console"),
    [
        ({"auth": "off", "host": "127.0.0.1"}, True),
        ({"auth": "auto", "host": "127.0.0.1"}, True),
        ({"auth": "on", "host": "127.0.0.1"}, False),
        ({"auth": "off", "host": "0.0.0.0"}, False),
        ({"auth": "auto", "host": "0.0.0.0"}, False),
    ],
)
def test_open_only_without_keys_on_loopback(
    tmp_path: Path, overrides: dict[str, str], open_console: bool
) -> None:
    app, service, *_ = build(tmp_path, **overrides)
    local = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}
    with TestClient(app, **local) as client:
        first = client.get("/console", follow_redirects=False)
        if not open_console:
            assert first.status_code == 303
            assert first.headers["location"] == "/console/login"
            assert client.get("/console/login").status_code == 200
            return
        html = assert_console_page(first)
        assert "Open console" in html
        assert COOKIE in first.headers["set-cookie"]
        assert client.get("/console/login", follow_redirects=False).status_code == 303
        made = client.post(
            "/console/topics",
            data={"name": "opened", "csrf": csrf_of(first)},
            follow_redirects=False,
        )
        assert made.status_code == 303
        assert client.post("/console/topics", data={"name": "again"}).status_code == 403
        assert [t.name for t in service.list_topics(limit=10).items] == ["opened"]
