"""The access log in a real chromium: what an auditor opens and downloads shows up on the admin's
/admin/access-log, and the page works under the strict CSP (no script errors)."""

from __future__ import annotations

from conftest import screenshot


def test_an_auditors_reads_appear_on_the_admins_access_log(new_page, server):
    auditor = new_page("auditor")
    auditor.goto(f"{server.url}/events?range=24h&node=tts-b&limit=10")
    link = auditor.locator(".vx-events-table tbody tr >> nth=0 >> a")
    request_id = link.get_attribute("title")
    link.click()
    auditor.wait_for_url("**/events/syn11-*")
    auditor.goto(f"{server.url}/events?range=24h&node=tts-b&limit=10")
    with auditor.expect_download() as download:
        auditor.click("#vx-events-export >> text=CSV")
    exported = download.value.path().read_text(encoding="utf-8").splitlines()
    assert exported[0].startswith("request_id,") and len(exported) > 1

    admin = new_page("admin")
    admin.goto(f"{server.url}/admin")
    admin.click("#access-log-link >> text=Access log")
    admin.wait_for_url("**/admin/access-log")
    assert "The chain verifies" in admin.text_content("#chain")
    admin.select_option("select[name=action]", "export")
    admin.fill("input[name=actor]", "auditor")
    with admin.expect_navigation():
        admin.click("#entries button[type=submit]")
    newest = admin.locator("#entries tbody tr >> nth=0")
    assert newest.locator("td >> nth=5").text_content() == "export"
    assert newest.locator("td >> nth=8").text_content() == f"{len(exported) - 1:,}"
    assert "node=tts-b" in newest.text_content() and "format=csv" in newest.text_content()
    admin.goto(f"{server.url}/admin/access-log?action=view_event&actor=auditor")
    assert request_id in admin.text_content("#entries tbody tr >> nth=0")
    screenshot(admin, "access-log.png")
    assert auditor.console_errors == [] and admin.console_errors == []

    assert new_page("auditor").goto(f"{server.url}/admin/access-log").status == 403
