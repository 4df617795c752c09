"""Browser tests: the dashboard in a real headless Chromium, against the live service.

Debian's `chromium` package is driven by Playwright through `executable_path`;
no browser is ever downloaded. `.ci/run` installs the package. Locally, without
it, these tests skip and say why; in CI (`CI` set) they fail instead.

They do not depend on the Datastore flavour, so they run on the Firestore-mode
pass only. Screenshots of the main pages land in `artifacts/screenshots/`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = Path(os.environ.get("METERING_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"

if os.environ.get("METERING_TEST_EMULATOR", "firestore") != "firestore":
    # Nothing here depends on the emulator's flavour: run once, on the firestore pass.
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (Debian's build, never a downloaded one)."""
    if not CHROMIUM.exists():
        reason = (
            f"browser tests need Debian's chromium at {CHROMIUM} "
            "(apt-get install chromium; .ci/run installs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        running = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield running
        running.close()


class Console:
    """Errors the page logged or threw; a test may allow the ones it provokes."""

    def __init__(self):
        self.errors: list[str] = []
        self.allowed: list[re.Pattern] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def open_page(browser, server, console):
    """Open the dashboard in a fresh browser context: `open_page(zone=..., width=...)`.

    Every console error or uncaught exception fails the test unless it was allowed.
    """
    contexts = []

    def opener(*, zone: str = "UTC", width: int = 1280, height: int = 900):
        context = browser.new_context(
            timezone_id=zone,
            viewport={"width": width, "height": height},
            accept_downloads=True,
            locale="en-GB",
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and console.errors.append(m.text))
        page.on("pageerror", lambda exc: console.errors.append(f"uncaught: {exc}"))
        page.goto(server.url + "/dashboard")
        return page

    yield opener
    for context in contexts:
        context.close()
    assert console.unexpected() == [], "the browser console showed errors"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
