"""The dashboard never hammers its server (issue 10 #17, the page's side): after a failed stats
load it waits longer and longer (5 s doubling to 5 min, with jitter, at least Retry-After), has
at most one request in flight, and stops asking after a 4xx until the user changes the view.

Time is the page's fake clock (Playwright's), moved forward by the test; the answers
are the real server's (400) or the test's (503, a held request) for the stats API only.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

UNAVAILABLE = '{"error": "the database is unavailable; retry later"}'


class Clock:
    """The page's fake clock, moved forward by the test, and the page's own time (s, from the first
    stats request) of each stats request it sent (``data-requests`` counts them)."""

    def __init__(self, page) -> None:
        self.page, self.arrivals, self.first, self.now, self.loaded = page, [], None, 0.0, 0
        page.clock.install()

    def _look(self) -> None:
        now_ms, sent, loaded = self.page.evaluate("""() => { const d = document.getElementById("dashboard")?.dataset;
            return [Date.now(), Number(d?.requests || 0), Number(d?.loaded || 0)]; }""")
        if sent and self.first is None:
            self.first = now_ms
        self.now = (now_ms - self.first) / 1000 if self.first is not None else 0.0
        self.loaded = loaded
        while len(self.arrivals) < sent:
            self.arrivals.append(self.now)

    def run(self, seconds: float, step: float | None = None, until=None) -> None:
        """Move time forward in steps (finer early on, where the waits are short), letting requests
        and answers through between them; stop early once ``until()`` is true."""
        self._look()
        start = self.now
        while self.now < start + seconds and not (until and until()):
            elapsed = self.now - start
            size = step or (1.0 if elapsed < 60 else 5.0)
            self.page.clock.fast_forward(int(size * 1000))
            self.page.wait_for_timeout(15)
            self._look()

    def wait_for(self, count: int) -> None:
        for _ in range(400):
            self._look()
            if len(self.arrivals) >= count:
                return
            self.page.wait_for_timeout(10)
        raise AssertionError(f"{len(self.arrivals)} stats requests, expected {count}")


def stats_only(url: str) -> bool:
    return urlsplit(url).path == "/api/v1/stats"


def fulfil_503(route, **headers) -> None:
    route.fulfill(status=503, body=UNAVAILABLE, headers={"Content-Type": "application/json", **headers})


@pytest.fixture
def clocked(new_page):
    page = new_page("viewer", fresh=True)  # a fake clock is per context
    return page, Clock(page)


def test_a_failing_server_is_asked_less_and_less_often(clocked, server):
    page, clock = clocked
    held, mode = [], {"answer": "hold"}

    def answer(route):
        if mode["answer"] == "hold":
            held.append(route)  # a server that does not answer yet
        elif mode["answer"] == "503":
            fulfil_503(route)
        else:
            route.continue_()

    page.route(stats_only, answer)
    page.goto(f"{server.url}/?range=24h")
    clock.wait_for(1)
    clock.run(150, step=10)  # past two refreshes (60 s): no second request while one is out
    assert len(clock.arrivals) == 1 and len(held) == 1

    # The server answers at last: 503, come back in 120 s.
    mode["answer"] = "503"
    held.pop().fulfill(status=503, body=UNAVAILABLE, headers={"Content-Type": "application/json", "Retry-After": "120"})
    page.locator("#vx-error:not([hidden])").wait_for()
    assert "trying again in 120 s" in page.text_content("#vx-error")
    answered = clock.now
    clock.run(125, step=2)
    assert len(clock.arrivals) == 2 and 119 <= clock.arrivals[1] - answered <= 123, (answered, clock.arrivals)

    # Then plain 503s: each wait longer than the last (jittered), up to the 5-minute cap.
    clock.run(400)
    times = clock.arrivals[1:]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len([t for t in times if t - times[0] <= 6]) <= 2, times  # the review saw 821 requests in 6 s
    assert 5 <= len(gaps) <= 9, gaps
    assert all(2.0 <= gap <= 305 for gap in gaps), gaps
    growing = [gap for gap in gaps if gap < 140]
    assert all(b >= a - 5 for a, b in zip(growing, growing[1:])), gaps  # 5 s: the clock's step

    # The server is back: the next retry draws the view, and the error goes away.
    mode["answer"] = "pass"
    before = clock.loaded
    clock.run(310, until=lambda: clock.loaded > before)
    assert clock.loaded > before and page.is_hidden("#vx-error")


def test_a_refused_view_is_asked_once(clocked, server):
    page, clock = clocked
    requests = []
    page.on("request", lambda request: stats_only(request.url) and requests.append(request.url))
    page.goto(f"{server.url}/?since=last-tuesday")  # the real server answers 400
    page.locator("#vx-error:not([hidden])").wait_for()
    assert "since" in page.text_content("#vx-error") and "trying again" not in page.text_content("#vx-error")
    clock.wait_for(1)
    clock.run(200, step=10)  # auto-refresh is on (60 s), yet the same wrong view is not asked again
    assert len(clock.arrivals) == len(requests) == 1
    page.select_option("#vx-range", "7d")  # a new view is asked for at once, and drawn
    page.locator("#dashboard[data-loaded='1']").wait_for(state="attached")
    assert len(requests) == 2 and page.is_hidden("#vx-error")
