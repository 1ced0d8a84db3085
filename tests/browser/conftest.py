"""The browser harness: a real ``latam serve``, Debian's Chromium driven by Playwright.

Skips on a laptop without Playwright for Python or without the browser
(``LATAM_TEST_CHROMIUM``, default /usr/bin/chromium; GitHub's runners name
/usr/bin/google-chrome); fails under CI. No browser is ever downloaded.

A failing test leaves a full-page screenshot of the page it was on in
``$LATAM_BROWSER_ARTIFACTS`` (default: the session's temporary directory) and names it
in the failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.browser.pages import OpenPage
from tests.support import LatamProcess, local_binary, running_serve, unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("LATAM_TEST_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 720}
TIMEOUT_MS = 5_000


# Package scope, not session: Playwright's sync API keeps an event loop running in this
# thread while it is started, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    executable = local_binary(CHROMIUM, "Chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="package")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where failure screenshots go."""
    named = os.environ.get("LATAM_BROWSER_ARTIFACTS")
    if not named:
        return tmp_path_factory.mktemp("browser-artifacts")
    path = Path(named)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="package")
def console_server(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """``latam serve`` on loopback with the default settings (keys not required)."""
    data_dir = tmp_path_factory.mktemp("console")
    with running_serve(data_dir, api_workers=1, worker_processes=1) as (base, _proc):
        yield base, data_dir


@pytest.fixture(scope="package")
def api(console_server: tuple[str, Path]) -> Iterator[httpx.Client]:
    base, _ = console_server
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client


class PageWatch:
    """What a page did wrong on its own: uncaught script errors and refused resources
    (a Content-Security-Policy violation is reported on the console as "Refused to …")."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        refused = re.search(r"Refused to|Content.Security.Policy", message.text)
        if message.type == "error" and refused:
            self.problems.append(f"{message.text} ({message.location.get('url', '')})")


@pytest.fixture
def open_page(
    browser: Browser, request: pytest.FixtureRequest, artifacts: Path
) -> Iterator[OpenPage]:
    """Opens pages in fresh browser contexts (own cookies each); the newest one is the
    one a failure screenshots. Every page ends the test without a script error or a
    refused resource."""
    contexts = []
    watches: list[PageWatch] = []

    def opened(base_url: str, **options: Any) -> Page:
        context = browser.new_context(base_url=base_url, viewport=VIEWPORT, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        watches.append(PageWatch(page))
        request.node.browser_page = page
        request.node.browser_artifacts = artifacts
        return page

    yield opened
    problems = [problem for watch in watches for problem in watch.problems]
    for context in contexts:
        context.close()
    assert problems == [], "the console's pages reported:\n" + "\n".join(problems)


@pytest.fixture
def page(open_page: OpenPage, console_server: tuple[str, Path]) -> Page:
    return open_page(console_server[0])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's current page, screenshotted whole, its path in the failure."""
    report = yield
    page = getattr(item, "browser_page", None)
    if report.failed and page is not None and not page.is_closed():
        name = re.sub(r"[^\w.-]", "_", item.name)
        target = item.browser_artifacts / f"{name}-{report.when}.png"  # type: ignore[attr-defined]
        try:
            page.screenshot(path=str(target), full_page=True, timeout=TIMEOUT_MS)
            note = f"full-page screenshot of {page.url}: {target}"
        except Exception as exc:  # the page may be what broke
            note = f"no screenshot of {page.url}: {exc}"
        if hasattr(report.longrepr, "addsection"):
            report.longrepr.addsection("browser", note)
        else:
            report.sections.append(("browser", note))
    return report


@pytest.fixture(scope="package")
def auth_server(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, LatamProcess]]:
    """``latam serve`` with API keys required (``LATAM_AUTH=on``)."""
    data_dir = tmp_path_factory.mktemp("console-auth")
    with running_serve(data_dir, auth="on", api_workers=1, worker_processes=1) as (base, proc):
        yield base, data_dir, proc
