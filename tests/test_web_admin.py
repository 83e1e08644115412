"""/admin: users and API tokens managed from the browser (on every database)."""

from __future__ import annotations

import re

import pytest

from voxtrail.store import accounts
from web_support import PASSWORD, add_user, client_for, csrf_of, fast_password_hashing, login, make_app  # noqa: F401

pytestmark = pytest.mark.usefixtures("fast_password_hashing")


def logged_in_admin(url):
    app = make_app(url)
    add_user(app, "root", "admin")
    with client_for(app) as client:
        login(client, "root")
        yield app, client
    app.state.store.close()


@pytest.fixture
def admin(db_url):
    yield from logged_in_admin(db_url)


@pytest.fixture
def admin_sqlite(sqlite_url):  # for what does not depend on the database
    yield from logged_in_admin(sqlite_url)


def submit(client, path: str, **form):
    token = csrf_of(client.get("/admin").text)
    return client.post(path, data={**form, "csrf_token": token})


def test_manage_users(admin):
    app, client = admin
    engine = app.state.store.engine
    added = submit(client, "/admin/users", name="bob", role="viewer", password=PASSWORD)
    assert added.status_code == 303
    page = client.get(added.headers["location"])
    assert "User bob added." in page.text and 'data-user="bob"' in page.text
    assert submit(client, "/admin/users/bob/role", role="auditor").status_code == 303
    assert accounts.get_user(engine, "bob").role == "auditor"
    with client_for(app) as bob:
        login(bob, "bob")
        assert bob.get("/admin").status_code == 403
        assert submit(client, "/admin/users/bob/password", password="a new password").status_code == 303
        assert bob.get("/admin").status_code == 303  # the reset ended bob's session
    with client_for(app) as bob:
        login(bob, "bob", "a new password")
        assert submit(client, "/admin/users/bob/remove").status_code == 303
        assert bob.get("/admin").status_code == 303  # removed: session gone
    assert accounts.get_user(engine, "bob") is None


@pytest.mark.parametrize("path, form, message", [
    ("/admin/users", {"name": "root", "role": "viewer", "password": PASSWORD}, "already exists"),
    ("/admin/users", {"name": "eve", "role": "superuser", "password": PASSWORD}, "unknown role"),
    ("/admin/users", {"name": "eve", "role": "viewer", "password": "short"}, "password too short"),
    ("/admin/users/root/remove", {}, "cannot remove your own account"),
    ("/admin/users/root/role", {"role": "viewer"}, "cannot change the role of your own account"),
    ("/admin/users/ghost/remove", {}, "no user named"),
])
def test_refusals_are_shown(admin_sqlite, path, form, message):
    app, client = admin_sqlite
    response = submit(client, path, **form)
    assert response.status_code == 400 and message in response.text
    assert accounts.get_user(app.state.store.engine, "root").role == "admin"


@pytest.mark.parametrize("spelling", ["root%20", "root%20%20", "Root", "ROOT", "root%09", "%EF%BD%92oot"])
def test_an_admin_cannot_reach_their_own_account_by_another_spelling(admin, spelling):
    """Issue 10 #5: on MariaDB /admin/users/admin2%20/role changed the admin's own role."""
    app, client = admin
    for path, form in ((f"/admin/users/{spelling}/role", {"role": "viewer"}),
                       (f"/admin/users/{spelling}/remove", {}),
                       (f"/admin/users/{spelling}/password", {"password": "a new password"})):
        response = submit(client, path, **form)
        assert response.status_code == 400, (path, response.status_code)
    root = accounts.get_user(app.state.store.engine, "root")
    assert root.role == "admin"
    assert client.get("/admin").status_code == 200  # the session survived: no password reset


def test_tokens_created_once_and_revoked(admin):
    app, client = admin
    created = submit(client, "/admin/tokens", name="node-1", scope="ingest")
    assert created.status_code == 200 and "shown only this once" in created.text
    secret = re.search(r"(vxt_[\w-]{43})", created.text).group(1)
    assert created.headers["cache-control"] == "no-store"
    token = accounts.verify_token(app.state.store.engine, secret)
    assert token.name == "node-1" and token.created_by == "root"
    listing = client.get("/admin").text
    assert secret not in listing and secret[:8] in listing
    assert "already revoked" not in listing
    revoked = submit(client, f"/admin/tokens/{token.id}/revoke")
    assert revoked.status_code == 303 and "Token node-1 revoked." in client.get(revoked.headers["location"]).text
    assert accounts.verify_token(app.state.store.engine, secret) is None
    assert submit(client, f"/admin/tokens/{token.id}/revoke").status_code == 400


def test_the_page_echoes_only_notices_it_signed(admin_sqlite):
    """/admin?notice=...&name=... from anyone but this server shows nothing (issue 10 #16)."""
    app, client = admin_sqlite
    for crafted in ("/admin?notice=user-added&name=<script>alert(1)</script>",
                    "/admin?notice=user-added&name=Call+0123+to+unlock",
                    "/admin?notice=user-added&name=x&sig=" + "0" * 64,
                    "/admin?notice=Your+account+is+locked"):
        page = client.get(crafted).text
        assert "alert(1)" not in page and "unlock" not in page and "locked" not in page
        assert 'class="notice"' not in page
    added = submit(client, "/admin/users", name="bob", role="viewer", password=PASSWORD)
    assert "User bob added." in client.get(added.headers["location"]).text
    forged = added.headers["location"].replace("name=bob", "name=mallory")
    assert "mallory" not in client.get(forged).text
