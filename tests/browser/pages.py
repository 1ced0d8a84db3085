"""What the browser tests do to a console page: accessibility checks and small waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from playwright.sync_api import Page

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
BLOCKING = ("serious", "critical")
T = TypeVar("T")
OpenPage = Callable[..., "Page"]  # the open_page fixture: a page on a base URL

# Runs axe in the page and returns what it found, trimmed to what a failure message needs.
RUN_AXE = """async () => {
  const results = await axe.run(document, {resultTypes: ["violations"]});
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.slice(0, 5).map(n => n.target.join(" ")),
  }));
}"""


def accessibility_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now.

    The script goes in through the DevTools protocol (``evaluate``), which the page's
    Content-Security-Policy does not govern: a ``<script>`` tag with the same text would be
    refused, as it should be.
    """
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    found: list[dict[str, Any]] = page.evaluate(RUN_AXE)
    return [violation for violation in found if violation["impact"] in BLOCKING]


def assert_accessible(page: Page) -> None:
    violations = accessibility_violations(page)
    lines = [
        f"  {v['impact']}: {v['id']} ({v['help']}) at {', '.join(v['targets'])}" for v in violations
    ]
    assert not violations, f"axe-core on {page.url}:\n" + "\n".join(lines)


def eventually(check: Callable[[], T | None], *, timeout: float = 10, what: str = "") -> T:
    """The first truthy result of ``check`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(0.1)


def row_ids(page: Page, selector: str, attribute: str) -> list[str]:
    """The ``attribute`` values of the elements ``selector`` finds, in page order."""
    ids: list[str] = page.locator(selector).evaluate_all(
        f"rows => rows.map(r => r.getAttribute('{attribute}'))"
    )
    return ids


def confirm_if_asked(page: Page) -> None:
    """Confirmation pages carry a submit button named ``confirm``; press it when shown."""
    button = page.locator('[name="confirm"]')
    if button.count():
        button.first.click()
        page.wait_for_load_state()
