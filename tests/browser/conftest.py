"""A real ``voxtrail serve`` on a SQLite file of known synthetic data, and a real chromium.

The server runs as a subprocess on a free port (``web_support.Server``); users of every role exist.
Every page is opened in Debian's chromium through Playwright (``executable_path``: no browser
download), with every request that is not for the local server aborted and recorded, so a test
fails if the page tries to reach the internet (a CDN, fonts, ...).

Without chromium the tests are skipped, except on CI (env CI set), where they fail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from web_support import PASSWORD, Server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
ROLES = ("viewer", "auditor", "admin")
#: The synthetic month ends at the current hour, so "last 30 days" and "last 7 days" are full.
EVENTS = 20_000
SEED = 11


def _need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set: browser tests must not be skipped")
        pytest.skip(reason)


@dataclass
class Site:
    url: str  # without the trailing slash
    db_url: str
    end: datetime  # the synthetic month ends here (exclusive)


def _fill(db_url: str, end: datetime) -> None:
    from voxtrail.demo.synthetic import SyntheticMonth, generate
    from voxtrail.store import Store, accounts

    with Store.open(db_url) as store:
        for batch in generate(SyntheticMonth(events=EVENTS, days=30, end=end, seed=SEED)):
            store.write(batch)
        for role in ROLES:
            accounts.add_user(store.engine, role, role, PASSWORD)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Site:
    _need_chromium()  # no server either when the browser tests are skipped
    db_url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'dash.db'}"
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    _fill(db_url, end)
    with Server("--db", db_url, "--log-level", "warning") as running:
        yield Site(running.url.rstrip("/"), db_url, end)


@pytest.fixture(scope="session")
def browser():
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Offsite:
    """Requests the page tried to send anywhere but the local server (all are aborted)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def route(self, route) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.urls.append(route.request.url)
            route.abort()


@pytest.fixture(scope="session")
def offsite() -> Offsite:
    return Offsite()


class Browsing:
    """Browser contexts: one per role, logged in once and kept for the session (Plotly.js is
    then cached as its headers allow), plus fresh ones for tests that change a context."""

    def __init__(self, browser, server: Site, offsite: Offsite) -> None:
        self.browser, self.server, self.offsite = browser, server, offsite
        self.shared: dict[str, object] = {}

    def context(self):
        context = self.browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id="UTC",
                                           locale="en-GB")
        context.route("**/*", self.offsite.route)
        return context

    def logged_in(self, role: str):
        if role not in self.shared:
            context = self.context()
            login(watch(context.new_page()), self.server.url, role)
            self.shared[role] = context
        return self.shared[role]


def watch(page):
    """Collect the page's script errors in ``page.console_errors``."""
    page.set_default_timeout(20_000)
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    return page


@pytest.fixture(scope="session")
def browsing(browser, server, offsite):
    b = Browsing(browser, server, offsite)
    yield b
    for context in b.shared.values():
        context.close()


@pytest.fixture
def new_page(browsing, offsite):
    """``new_page(role=None, fresh=False)``: a page logged in as ``role`` (none: no session).

    Pages of a role share its context unless ``fresh`` (a new context, logged in anew).
    """
    opened, fresh_contexts = [], []
    already = len(offsite.urls)

    def make(role: str | None = None, fresh: bool = False):
        if role is None or fresh:
            context = browsing.context()
            fresh_contexts.append(context)
            if role:
                login(watch(context.new_page()), browsing.server.url, role)
        else:
            context = browsing.logged_in(role)
        page = watch(context.new_page())
        opened.append(page)
        return page

    yield make
    for page in opened:
        page.close()
    for context in fresh_contexts:
        context.close()
    assert offsite.urls[already:] == [], f"the page tried to leave localhost: {offsite.urls[already:]}"


def login(page, base: str, role: str) -> None:
    """Log in through the form; lands on /healthz (cheap) instead of the dashboard."""
    page.goto(f"{base}/login?next=/healthz")
    page.fill("input[name=username]", role)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith("/healthz"), f"login as {role} failed: {page.url}"
    page.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
