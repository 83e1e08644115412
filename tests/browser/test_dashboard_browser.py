"""The dashboard and event pages in a real chromium against a real ``voxtrail serve``.

Every test also checks (in the ``new_page`` fixture) that no request left localhost: Plotly.js
comes from voxtrail, so the page draws on a machine without internet.
"""

from __future__ import annotations

import time
from datetime import datetime

import sqlalchemy as sa
from conftest import EVENTS, screenshot

from voxtrail.store import Store
from voxtrail.store.schema import tts_events

PANELS = ("daily", "hourly", "by_emotion", "by_text_length", "latency_vs_length", "heatmap", "percentiles",
          "rtf_audio", "stages", "failure_rate", "errors", "by_node", "by_model")

# What Plotly drew in a panel: traces in its data, and marks in the SVG (bars and markers are
# .point, lines .js-line, a heat map an image), not just an empty div.
DRAWN = """(name) => {
  const figure = document.querySelector(`.vx-panel[data-panel="${name}"]`);
  const plot = figure.querySelector(".vx-plot");
  const values = (plot.data || []).reduce((n, t) => n + (t.z ? t.z.flat() : (t.y || [])).filter((v) => v).length, 0);
  return { state: figure.dataset.state, traces: (plot.data || []).length, values,
           marks: plot.querySelectorAll(".point, .js-line, .hm image").length,
           message: figure.querySelector(".vx-panel-empty").textContent };
}"""


def loaded(page, after: int = 0, timeout: float = 20.0) -> int:
    """Wait until the page has drawn a stats answer newer than ``after``; return the counter.

    Polled from here: wait_for_function would evaluate a string in the page, which the CSP
    (no 'unsafe-eval') rightly refuses.
    """
    deadline = time.monotonic() + timeout
    while True:
        assert page.get_attribute("#dashboard", "data-failed") is None, page.text_content("#vx-error")
        count = int(page.get_attribute("#dashboard", "data-loaded") or 0)
        if count > after:
            return count
        assert time.monotonic() < deadline, f"the dashboard drew nothing new after {after} loads"
        page.wait_for_timeout(50)


def tile(page, key: str) -> str:
    return page.text_content(f'.vx-tile[data-tile="{key}"] .vx-tile-value').strip()


def count_in_view(server, page, **where) -> int:
    """Events of the view the page shows (its since/until), counted with plain SQL."""
    since = datetime.fromisoformat(page.get_attribute("#dashboard", "data-since")).replace(tzinfo=None)
    until = datetime.fromisoformat(page.get_attribute("#dashboard", "data-until")).replace(tzinfo=None)
    c = tts_events.c
    query = sa.select(sa.func.count()).where(c.ts >= since, c.ts < until,
                                             *(c[k].in_(v if isinstance(v, tuple) else (v,)) for k, v in where.items()))
    with Store.open(server.db_url) as store, store.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def pick(page, menu: str, value: str) -> None:
    page.click(f'.vx-menu[data-filter="{menu}"] summary')
    page.check(f'.vx-menu[data-filter="{menu}"] input[value="{value}"]')
    page.click("h2 >> nth=0")  # click away: the menu closes


def test_every_panel_is_drawn_with_data(new_page, server):
    page = new_page("viewer")
    page.goto(f"{server.url}/?range=30d")
    loaded(page)
    assert page.evaluate("typeof window.Plotly") == "object"
    assert tile(page, "calls") == f"{EVENTS:,}"
    assert tile(page, "success_rate").endswith(" %") and tile(page, "mean_latency").endswith((" s", " ms"))
    assert tile(page, "mean_rtf").endswith("x")
    for name in PANELS:
        drawn = page.evaluate(DRAWN, name)
        assert drawn["state"] == "drawn", (name, drawn)
        assert drawn["traces"] > 0 and drawn["values"] > 0 and drawn["marks"] > 0, (name, drawn)
    assert page.is_hidden("#vx-empty")
    assert "Last 30 days" in page.text_content("#vx-range-text")
    page.wait_for_timeout(300)  # let Plotly finish its transitions before the picture
    screenshot(page, "dashboard.png")
    # The A/B comparison in exact figures, and hover values on the charts.
    versions = page.locator('.vx-panel[data-panel="by_model"] .vx-table tbody tr')
    assert versions.count() == 2 and "2.1" in versions.nth(1).text_content()
    bar = page.locator('.vx-panel[data-panel="by_node"] .bars .point').first
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=3)  # Plotly listens on its drag layer
    hover = page.locator('.vx-panel[data-panel="by_node"] .hoverlayer')
    for _ in range(40):
        if "calls" in hover.text_content():
            break
        page.wait_for_timeout(50)
    assert "calls" in hover.text_content() and "success" in hover.text_content(), hover.text_content()
    assert not page.console_errors, page.console_errors


def test_a_filter_changes_the_figures_and_the_url_and_back_restores(new_page, server):
    page = new_page("viewer")
    page.goto(f"{server.url}/?range=30d")
    n = loaded(page)
    assert tile(page, "calls") == f"{EVENTS:,}"
    pick(page, "node", "tts-a")
    n = loaded(page, n)
    expected = count_in_view(server, page, node="tts-a")
    assert 0 < expected < EVENTS
    assert tile(page, "calls") == f"{expected:,}"
    assert "node=tts-a" in page.url and "range=30d" in page.url
    assert page.text_content('.vx-menu[data-filter="node"] .vx-menu-value') == "tts-a"
    by_node = page.evaluate("document.querySelector('.vx-panel[data-panel=by_node] .vx-plot').data[0].x")
    assert by_node == ["tts-a"]

    page.go_back()
    n = loaded(page, n)
    assert tile(page, "calls") == f"{EVENTS:,}" and "node=" not in page.url
    assert not page.is_checked('.vx-menu[data-filter="node"] input[value="tts-a"]')
    page.go_forward()
    loaded(page, n)
    assert tile(page, "calls") == f"{expected:,}"


def test_a_shared_url_restores_the_view(new_page, server):
    page = new_page("auditor")
    page.goto(f"{server.url}/?range=7d&node=tts-b&node=tts-c&status=failed")
    loaded(page)
    assert page.input_value("#vx-range") == "7d"
    assert page.text_content('.vx-menu[data-filter="node"] .vx-menu-value') == "tts-b, tts-c"
    assert page.text_content('.vx-menu[data-filter="status"] .vx-menu-value') == "failed"
    expected = count_in_view(server, page, node=("tts-b", "tts-c"), status="failed")
    assert expected > 0 and tile(page, "calls") == f"{expected:,}"
    assert tile(page, "success_rate") == "0 %"
    # An auditor follows the figures to the events behind them: same range, same filters.
    page.click("#vx-events-link")
    page.wait_for_url("**/events?**")
    assert page.text_content("#vx-events-count").split()[0] == f"{expected:,}"
    assert page.locator(".vx-status-failed").count() == min(expected, 50)


def test_an_empty_range_says_so(new_page, server):
    page = new_page("viewer")
    page.goto(f"{server.url}/?range=30d")
    n = loaded(page)
    page.select_option("#vx-range", "custom")
    page.fill("#vx-since", "2020-01-01T00:00")
    page.fill("#vx-until", "2020-01-02T00:00")
    page.click("#vx-apply-custom")
    loaded(page, n)
    assert page.is_visible("#vx-empty")
    assert page.text_content("#vx-empty") == "No generations in this range"
    assert page.is_hidden(".vx-panels") and page.is_hidden(".vx-tiles")
    assert "since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z" in page.url
    screenshot(page, "dashboard-empty.png")
    # Shared, the link shows the same empty view.
    other = new_page("viewer")
    other.goto(page.url)
    loaded(other)
    assert other.is_visible("#vx-empty") and other.input_value("#vx-range") == "custom"


def test_a_bad_filter_in_the_url_is_explained(new_page, server):
    page = new_page("viewer")
    page.goto(f"{server.url}/?since=last-tuesday")
    page.wait_for_selector("#vx-error:not([hidden])")
    assert "since" in page.text_content("#vx-error")


def test_auto_refresh_runs_while_visible_and_pauses_when_hidden(new_page, server):
    page = new_page("viewer", fresh=True)  # a fake clock is installed per context
    page.clock.install()
    page.goto(f"{server.url}/?range=24h")
    n = loaded(page)
    assert page.input_value("#vx-refresh") == "60"
    page.clock.fast_forward("01:01")
    n = loaded(page, n)
    page.evaluate("""() => { Object.defineProperty(document, "hidden", {value: true, configurable: true});
                            document.dispatchEvent(new Event("visibilitychange")); }""")
    page.clock.fast_forward("03:00")
    page.wait_for_timeout(500)
    assert int(page.get_attribute("#dashboard", "data-loaded")) == n  # nothing fetched while hidden
    page.evaluate("""() => { Object.defineProperty(document, "hidden", {value: false, configurable: true});
                            document.dispatchEvent(new Event("visibilitychange")); }""")
    loaded(page, n)  # overdue: refreshed as soon as the tab is visible again
    page.select_option("#vx-refresh", "0")
    assert "refresh=0" in page.url


def test_without_a_session_everything_sends_to_login(new_page, server):
    page = new_page()
    page.goto(f"{server.url}/?range=7d")
    assert "/login?next=" in page.url
    assert page.request.get(f"{server.url}/api/v1/stats").status == 401
    assert page.request.get(f"{server.url}/api/v1/events").status == 401
    page.goto(f"{server.url}/events")
    assert "/login?next=%2Fevents" in page.url


def test_a_viewer_never_sees_event_text_an_auditor_does(new_page, server):
    viewer = new_page("viewer")
    assert viewer.locator("nav >> text=Events").count() == 0
    response = viewer.goto(f"{server.url}/events")
    assert response.status == 403
    assert viewer.locator(".vx-events-table").count() == 0
    api = viewer.request.get(f"{server.url}/api/v1/events?range=30d")
    assert api.status == 403 and "text_input" not in api.text() and "text_excerpt" not in api.text()
    assert viewer.request.get(f"{server.url}/events/syn11-0").status == 403

    auditor = new_page("auditor")
    auditor.goto(f"{server.url}/events?range=30d&node=tts-c&limit=25")
    rows = auditor.locator(".vx-events-table tbody tr")
    assert rows.count() == 25
    assert "event" in auditor.text_content("#vx-events-count")
    screenshot(auditor, "events.png")
    auditor.locator(".vx-events-table tbody tr >> nth=0 >> a").click()
    auditor.wait_for_url("**/events/syn11-*")
    assert auditor.locator("text=text_input").count() == 1
    assert auditor.locator(".vx-pre").count() >= 1
    screenshot(auditor, "event-detail.png")
