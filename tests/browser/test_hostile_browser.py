"""What a hostile client can put into the data, in a real chromium: markup in labels is shown as
text (issue 10 #7), any request_id links to its own event (#8), and error messages reach auditors
only, on request (#9).

The hostile events lie 40 days before the synthetic month, so the other tests' views never see
them; these tests look at that day alone.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import screenshot
from test_dashboard_browser import loaded

from voxtrail.event import EventBatch
from voxtrail.query.access import list_access
from voxtrail.store import Store

NODE = '<a href="https://evil.example/node">node-link</a>'
MODEL = "<b>bold-model</b>"
EMOTION = '<span style="font-size:60px">big</span>'
ERROR_TYPE = '<a href="https://evil.example/e">Err</a>&amp;'
MESSAGE = 'failed for <a href="https://evil.example/m">the user text</a>'
IDS = ("../api/v1/events/export", "..", ".", "a/../../admin/access-log", "%2e%2e/x", "100%", "?format=csv",
       "#top", "with space", "日本/ü?x=1#y")


@pytest.fixture(scope="module")
def day(server):
    """The hostile day: [since, until) as URL parameters, with its events written."""
    start = server.end - timedelta(days=40)
    records = [
        {"request_id": f"hostile-{i}", "ts": (start + timedelta(minutes=i)).replace(tzinfo=None),
         "status": "failed" if i % 2 else "success", "node": NODE, "model": MODEL, "model_version": "<i>1</i>",
         "emotion": EMOTION, "latency_ms": 800.0 + 10 * i, "text_length": 40, "text_input": f"hostile {i}",
         "error_type": ERROR_TYPE if i % 2 else None, "error_message": MESSAGE if i % 2 else None,
         "source": "http"}
        for i in range(6)
    ] + [
        {"request_id": rid, "ts": (start + timedelta(hours=2, minutes=i)).replace(tzinfo=None), "status": "success",
         "node": "ids", "text_input": f"odd id {i}", "source": "http"}
        for i, rid in enumerate(IDS)
    ]
    with Store.open(server.db_url) as store:
        store.write(EventBatch.from_records(records))
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return f"since={iso(start)}&until={iso(start + timedelta(days=1))}"


# Elements Plotly made from markup: links, and tspans styled by <b>, <i> or <span style>.
MARKUP = """() => ({
  links: document.querySelectorAll(".vx-plot a").length,
  styled: [...document.querySelectorAll(".vx-plot tspan")].filter((t) =>
    /font-weight|font-style|font-size/.test(t.getAttribute("style") || "")).length,
  texts: [...document.querySelectorAll(".vx-plot .xtick text, .vx-plot .ytick text")].map((t) => t.textContent),
})"""


def test_markup_in_labels_is_shown_as_text(new_page, server, day):
    page = new_page("viewer")
    page.goto(f"{server.url}/?{day}")
    loaded(page)
    found = page.evaluate(MARKUP)
    assert found["links"] == 0 and found["styled"] == 0, found
    assert NODE in found["texts"] and EMOTION in found["texts"] and f"{MODEL} <i>1</i>" in found["texts"], found
    assert ERROR_TYPE in found["texts"], found
    # The tables under the charts show the same values as text.
    assert NODE in page.text_content('.vx-panel[data-panel="by_node"] .vx-table')
    # Clicking a label goes nowhere (the fixture also checks that nothing left localhost).
    before = page.url
    tick = page.locator('.vx-panel[data-panel="by_node"] .xtick text').first
    tick.click(force=True)
    page.wait_for_timeout(300)
    assert page.url == before and len(page.context.pages) == 1
    screenshot(page, "dashboard-markup.png")
    # A viewer gets error types and counts: no message, and no way to ask for them.
    assert page.locator("#vx-error-messages").count() == 0
    assert "the user text" not in page.content()
    assert not page.console_errors, page.console_errors


def test_auditors_see_error_messages_on_request_logged(new_page, server, day):
    page = new_page("auditor")
    page.goto(f"{server.url}/?{day}")
    loaded(page)
    assert "the user text" not in page.text_content('.vx-panel[data-panel="errors"]')
    page.click("#vx-error-messages")
    table = page.locator("#vx-error-messages-table .vx-table")
    table.wait_for()
    assert MESSAGE in table.text_content() and ERROR_TYPE in table.text_content()
    assert table.locator("a").count() == 0  # text, not markup
    screenshot(page, "dashboard-error-messages.png")
    with Store.open(server.db_url) as store:
        entry = list_access(store.engine, actor="auditor", action="error_messages", limit=1).entries[0]
    assert entry.row_count == 1 and entry.channel == "api"


def test_every_id_links_to_its_own_event(new_page, server, day):
    page = new_page("auditor")
    page.goto(f"{server.url}/events?{day}&node=ids&limit=100")
    # Where each link leads, as the browser resolves it (dot segments, %2e, ? and # included).
    resolved = dict(page.evaluate("""() => [...document.querySelectorAll(".vx-events-table tbody tr a")]
                                     .map((a) => [a.title, a.href])"""))
    assert set(resolved) == set(IDS)
    for request_id, url in resolved.items():
        assert page.goto(url).status == 200, (request_id, url)
        assert page.text_content("h1").strip() == request_id, (request_id, page.url)
        assert page.locator("text=text_input").count() == 1
