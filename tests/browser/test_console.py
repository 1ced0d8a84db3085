"""The console in a real browser: Debian's Chromium, driven by Playwright, against a real
``latam serve``, under the console's own Content-Security-Policy.

Each page is also checked with axe-core (serious and critical violations fail), the
navigation pages in the light and the dark colour scheme.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser.pages import (
    OpenPage,
    assert_accessible,
    confirm_if_asked,
    eventually,
    row_ids,
)
from tests.contract.brokers import SqliteHarness
from tests.support import LatamProcess, latam_env, unique

if TYPE_CHECKING:
    from playwright.sync_api import Page

TAIL_SECONDS = 2  # how often the live tail asks for new messages
NAV = ("/console", "/console/topics", "/console/dead-letters", "/console/keys")
SCHEMA = {"type": "object", "required": ["flight"], "properties": {"flight": {"type": "string"}}}


def topic_id_named(api: httpx.Client, name: str) -> int:
    topics = api.get("/v1/topics", params={"limit": 1000}).json()["data"]
    return next(int(t["id"]) for t in topics if t["name"] == name)


def publish(api: httpx.Client, topic_id: int, *flights: str) -> list[str]:
    body = {"messages": [{"id": f, "data": {"flight": f, "delay_min": 5}} for f in flights]}
    response = api.post(f"/v1/topics/{topic_id}/messages", json=body)
    assert response.status_code == 202, response.text
    return list(response.json()["message_ids"])


def tail_ids(page: Page) -> set[str]:
    return set(row_ids(page, "#tail [data-message-id]", "data-message-id"))


def browsed_ids(page: Page) -> list[str]:
    """The messages of the page's browser (every message row outside the live tail)."""
    return row_ids(page, "[data-message-id]:not(#tail [data-message-id])", "data-message-id")


def show_window(page: Page, topic_id: int, since: datetime, until: datetime) -> None:
    form = page.locator(f'form[action="/console/topics/{topic_id}"]')
    form.locator('input[name="since"]').fill(since.strftime("%Y-%m-%dT%H:%M:%S"))
    form.locator('input[name="until"]').fill(until.strftime("%Y-%m-%dT%H:%M:%S"))
    form.locator('[type="submit"]').first.click()
    page.wait_for_load_state()


def create_topic_in_console(page: Page, name: str) -> None:
    page.goto("/console/topics")
    form = page.locator('form[action="/console/topics"]')
    form.locator('input[name="name"]').fill(name)
    form.locator('[type="submit"]').first.click()
    page.wait_for_load_state()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_overview_and_navigation(
    open_page: OpenPage, console_server: tuple[str, Path], scheme: str
) -> None:
    page = open_page(console_server[0], color_scheme=scheme)
    page.goto("/console")
    for href in NAV:
        assert page.locator(f'a[href="{href}"]').count(), f"no navigation link to {href}"
    assert_accessible(page)
    for href in NAV[1:]:
        page.locator(f'a[href="{href}"]').first.click()
        page.wait_for_url(f"**{href}")
        assert_accessible(page)


def test_the_public_status_page_is_accessible(page: Page) -> None:
    for path in ("/status", "/status?refresh=on"):
        page.goto(path)
        assert page.locator("#overall").count() == 1
        if path == "/status":
            assert_accessible(page)  # the self-reloading variant is opt-in, for wall screens


def test_live_tail_pause_resume_and_time_range(page: Page, api: httpx.Client) -> None:
    name = unique("flights-")
    create_topic_in_console(page, name)
    topic_id = topic_id_named(api, name)
    topic_page = f"/console/topics/{topic_id}"
    assert urlsplit(page.url).path == topic_page, "not taken to the new topic's page"
    assert page.locator("#tail").count(), "no #tail on the topic page"
    assert_accessible(page)

    first = publish(api, topic_id, "LA800", "LA801", "LA802")
    eventually(lambda: set(first) <= tail_ids(page), what="published messages in the tail")

    pause = page.locator("#tail-pause")
    pause.click()
    assert pause.get_attribute("aria-pressed") == "true"
    paused = tail_ids(page)
    later = publish(api, topic_id, "LA803", "LA804")
    # Stored (the API shows them), yet the paused tail stays as it was past a poll or two.
    eventually(
        lambda: len(api.get(f"/v1/topics/{topic_id}/messages").json()["data"]) == 5,
        what="the later messages stored",
    )
    page.wait_for_timeout(2 * TAIL_SECONDS * 1000 + 500)
    assert tail_ids(page) == paused, "the tail changed while paused"

    pause.click()
    assert pause.get_attribute("aria-pressed") == "false"
    eventually(lambda: set(later) <= tail_ids(page), what="the tail catching up on resume")
    assert len(row_ids(page, "#tail [data-message-id]", "data-message-id")) == 5, "a repeat"

    # The time range: a window in the past holds none of them, one around now all five.
    now = datetime.now(UTC)
    show_window(page, topic_id, datetime(2000, 1, 1), datetime(2000, 1, 2))
    assert browsed_ids(page) == [], "messages outside the time range shown"
    assert page.locator('input[name="since"]').input_value() == "2000-01-01T00:00:00"
    show_window(page, topic_id, now - timedelta(hours=1), now + timedelta(hours=1))
    assert sorted(browsed_ids(page)) == sorted(first + later)
    assert_accessible(page)


def test_dead_letter_fix_and_replay(
    page: Page, api: httpx.Client, console_server: tuple[str, Path]
) -> None:
    _, data_dir = console_server
    name = unique("delays-")
    topic_id = int(api.post("/v1/topics", json={"name": name}).json()["id"])
    assert api.put(f"/v1/topics/{topic_id}/schema", json={"schema": SCHEMA}).status_code == 200
    message_id = unique("bad-")
    SqliteHarness(data_dir / "broker.db").publish_raw(
        b'{"flight": 800}', {"topic": name, "message_id": message_id}
    )
    letter = eventually(
        lambda: api.get("/v1/dead-letters", params={"topic": name}).json()["data"],
        what="the schema violation dead-lettered",
    )[0]

    page.goto("/console/dead-letters")
    row = page.locator(f'[data-letter-id="{letter["id"]}"]')
    assert row.count(), f"dead letter {letter['id']} not listed"
    assert_accessible(page)
    row.locator("a").first.click()
    page.wait_for_load_state()
    assert_accessible(page)

    def replay(data: object) -> None:
        form = page.locator('form[action$="/replay"]')
        form.locator('textarea[name="data"]').fill(json.dumps(data))
        form.locator('[type="submit"]').first.click()
        page.wait_for_load_state()
        confirm_if_asked(page)

    replay({"flight": 801})  # still not a string: refused, the letter stays
    assert page.locator('[role="alert"]').count(), "no error shown for a bad correction"
    assert_accessible(page)
    replay({"flight": "LA800"})

    stored = eventually(
        lambda: api.get(f"/v1/topics/{topic_id}/messages").json()["data"],
        what="the corrected message stored",
    )
    assert [(m["id"], m["data"]) for m in stored] == [(message_id, {"flight": "LA800"})]
    page.goto("/console/dead-letters")
    assert not page.locator(f'[data-letter-id="{letter["id"]}"]').count()
    page.goto(f"/console/topics/{topic_id}")
    assert browsed_ids(page) == [message_id]


def create_key_in_console(page: Page, name: str) -> str:
    """A read key made on the keys page; the token as the page shows it, once."""
    page.goto("/console/keys")
    form = page.locator('form[action="/console/keys"]')
    form.locator('input[name="name"]').fill(name)
    form.locator('[type="submit"]').first.click()
    page.wait_for_load_state()
    token = page.locator("#new-key").inner_text().strip()
    assert token.startswith("lt_"), token
    return token


def revoke_in_console(page: Page, key_id: str) -> None:
    page.goto("/console/keys")
    page.locator(f'form[action$="/{key_id}/revoke"]').locator('[type="submit"]').click()
    page.wait_for_load_state()
    assert_accessible(page)  # the confirmation page
    confirm_if_asked(page)
    page.goto("/console/keys")
    assert not page.locator(f'form[action$="/{key_id}/revoke"]').count(), "still revocable"


def test_a_new_key_is_shown_once_then_revoked(page: Page) -> None:
    page.goto("/console/keys")
    assert_accessible(page)
    token = create_key_in_console(page, unique("ops-"))
    page.locator("#copy-key").click()
    eventually(lambda: page.locator("#copy-status").inner_text().strip(), what="copy feedback")
    assert_accessible(page)

    page.reload()
    assert not page.locator("#new-key").count(), "the key is shown again"
    assert token not in page.content()

    revoke_in_console(page, token.split("_")[1])
    page.locator('form[action="/console/logout"]').locator('[type="submit"]').click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == "/console", "an open console stays open"


def create_key(data_dir: Path) -> str:
    """An admin key made with ``latam keys create``, as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "latam", "keys", "create", "--name", "console", "--scope", "admin"],
        env=latam_env(data_dir),
        capture_output=True,
        check=True,
        timeout=30,
    )
    return str(json.loads(done.stdout)["api_key"])


def sign_in(page: Page, key: str) -> None:
    login = page.locator('form[action="/console/login"]')
    login.locator('input[name="key"]').fill(key)
    login.locator('[type="submit"]').first.click()
    page.wait_for_load_state()


def test_with_auth_on_the_console_asks_for_a_key(
    open_page: OpenPage, auth_server: tuple[str, Path, LatamProcess]
) -> None:
    base, data_dir, _ = auth_server
    refused = httpx.get(f"{base}/console/topics", follow_redirects=False)
    assert refused.is_redirect, refused.status_code
    assert urlsplit(refused.headers["location"]).path == "/console/login"

    page = open_page(base)
    page.goto("/console/topics")
    assert urlsplit(page.url).path == "/console/login"
    assert_accessible(page)
    sign_in(page, "lt_0123456789ab_" + "x" * 43)
    assert urlsplit(page.url).path == "/console/login", "a wrong key was let in"
    assert not page.locator('a[href="/console/keys"]').count()

    sign_in(page, create_key(data_dir))
    assert urlsplit(page.url).path == "/console"
    page.goto("/console/topics")
    assert urlsplit(page.url).path == "/console/topics"

    # A key made in the console works on the API until it is revoked there.
    token = create_key_in_console(page, unique("reader-"))
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
        assert api.get("/v1/topics").status_code == 200
        revoke_in_console(page, token.split("_")[1])
        eventually(lambda: api.get("/v1/topics").status_code == 401, what="the key refused")

    page.locator('form[action="/console/logout"]').locator('[type="submit"]').click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == "/console/login"
    page.goto("/console")
    assert urlsplit(page.url).path == "/console/login", "still signed in after signing out"
