"""Property tests over the login form and the auth paths (issue 10, "beyond the list"): any user
name (spaces, case, Unicode look-alikes, NUL, huge), any password, CSRF token, cookie, Host and
X-Forwarded-* header gives no 5xx and no way in but the exact name with its password."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import assume, example, given, strategies as st

from voxtrail.store import accounts
from voxtrail.store.schema import users
from voxtrail.web.throttle import LoginThrottle
from web_support import PASSWORD, add_user, client_for, csrf_of, login, make_app


# Characters that make a name look like, or (on some database) compare equal to, "admin".
LOOKALIKES = {"a": ["A", "а", "ａ", "ɑ", "á"], "d": ["D", "ԁ", "ｄ"], "m": ["M", "ｍ", "м"],
              "i": ["I", "і", "ı", "ｉ", "1", "l"], "n": ["N", "ո", "ｎ"]}
PADDING = ["", " ", "  ", "\t", "\n", "\r\n", "\0", "\u00a0", "\u200b", "\u3000", "\ufeff"]


@st.composite
def near_admin(draw) -> str:
    """'admin' padded (as a PAD SPACE collation ignores), with look-alike letters, or both."""
    letters = "admin"
    if draw(st.booleans()):
        letters = "".join(draw(st.sampled_from([c, *LOOKALIKES[c]])) for c in letters)
    return draw(st.sampled_from(PADDING)) + letters + draw(st.sampled_from(PADDING))


path_names = st.one_of(near_admin(), near_admin(), st.text(max_size=40), st.just("admin"), st.just("x" * 2000))
names = st.one_of(path_names, st.just("a" * 100_000))
session_cookies = st.one_of(st.none(), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e,
                                                             exclude_characters=";,\"\\"), max_size=80))
header_bytes = st.binary(max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b)


def _site(url: str):
    """An app on ``url`` with users admin and bob, with cheap Argon2 parameters."""
    from argon2 import PasswordHasher

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        accounts._dummy_hash.cache_clear()
        app = make_app(url)
        add_user(app, "admin", "admin")
        add_user(app, "bob", "viewer")
        yield app
        app.state.store.close()
    accounts._dummy_hash.cache_clear()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One app for all examples of a test (module-scoped: examples share it)."""
    yield from _site(f"sqlite:///{tmp_path_factory.mktemp('props') / 'vx.db'}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mysql"])
def site_on_every_db(request, module_db_url):
    """The same on SQLite, PostgreSQL and MariaDB, whose collations compare names differently."""
    yield from _site(module_db_url(request.param))


def logged_in(app):
    with client_for(app) as client:
        login(client, "admin")
        yield client


@pytest.fixture(scope="module")
def admin_client(site):
    """A browser logged in as admin, kept across examples: what they try must not end its session."""
    yield from logged_in(site)


@pytest.fixture(scope="module")
def admin_client_on_every_db(site_on_every_db):
    yield from logged_in(site_on_every_db)


def fresh_throttle(app) -> None:
    """Each example starts unthrottled (memory and the users table), so a right login can pass."""
    app.state.login_throttle = LoginThrottle()
    with app.state.store.engine.begin() as conn:
        conn.execute(sa.update(users).values(failed_logins=0, last_failed_login_at=None))


@given(name=names, right_password=st.booleans(), password=st.text(max_size=60),
       csrf=st.one_of(st.none(), st.text(max_size=60)), cookie=session_cookies,
       host=st.one_of(st.none(), header_bytes), forwarded=st.one_of(st.none(), header_bytes))
@example(name="admin ", right_password=True, password="", csrf=None, cookie=None, host=None, forwarded=None)
@example(name="Admin", right_password=True, password="", csrf=None, cookie=None, host=None, forwarded=None)
@example(name="ａｄｍｉｎ", right_password=True, password="", csrf=None, cookie=None, host=None, forwarded=None)
def test_login_lets_in_only_the_exact_name_with_its_password(site_on_every_db, name, right_password, password, csrf,
                                                             cookie, host, forwarded):
    app = site_on_every_db
    fresh_throttle(app)
    with client_for(app) as client:
        form = client.get("/login")
        real_csrf = csrf_of(form.text)
        headers = {}
        if host is not None:
            headers["host"] = host
        if forwarded is not None:
            headers["x-forwarded-for"] = forwarded
            headers["x-forwarded-proto"] = forwarded
        if cookie is not None:
            client.cookies.set("voxtrail_session", cookie)
        sent_password = PASSWORD if right_password else password
        response = client.post("/login", headers=headers, data={
            "username": name, "password": sent_password, "next": "/admin",
            "csrf_token": real_csrf if csrf is None else csrf})
    assert response.status_code < 500, (response.status_code, response.text[:300])
    session_set = "voxtrail_session=" in response.headers.get("set-cookie", "") and response.status_code == 303
    exact = name == "admin" and sent_password == PASSWORD and (csrf is None or csrf == real_csrf)
    assert session_set == exact, (name, response.status_code)
    if response.status_code in (301, 302, 303, 307, 308):
        location = response.headers["location"]
        assert location.startswith("/") and not location.startswith("//"), location


@given(name=path_names, role=st.sampled_from(["viewer", "auditor", "admin", "root", ""]))
@example(name="admin ", role="viewer")
def test_admin_paths_never_reach_the_admin_by_another_name(site_on_every_db, admin_client_on_every_db, name, role):
    site = site_on_every_db
    engine = site.state.store.engine
    client = admin_client_on_every_db
    token = csrf_of(client.get("/admin").text)
    segment = quote(name, safe="")
    assume(segment)
    actions = [(f"/admin/users/{segment}/role", {"role": role}), (f"/admin/users/{segment}/remove", {})]
    if name != "admin":  # an admin may reset their own password (it ends their session)
        actions.append((f"/admin/users/{segment}/password", {"password": "another password"}))
    for path, form in actions:
        response = client.post(path, data={**form, "csrf_token": token})
        assert response.status_code < 500, (path, response.status_code)
        if name == "admin":  # refused (422: an empty role)
            assert response.status_code in (400, 422), response.status_code
        assert accounts.get_user(engine, "admin").role == "admin"
    assert client.get("/admin").status_code == 200  # still logged in: no reset, no removal
    if accounts.get_user(engine, "bob") is None:  # an exact "bob" may be removed: put him back
        add_user(site, "bob", "viewer")


@given(token=st.one_of(st.text(max_size=80), st.binary(max_size=80)), where=st.sampled_from(["form", "header"]),
       cookie=session_cookies)
def test_csrf_tokens_and_cookies_of_any_shape(site, admin_client, token, where, cookie):
    engine = site.state.store.engine
    form = {"name": "mallory", "role": "admin", "password": PASSWORD}
    as_header = token if isinstance(token, bytes) else token.encode()
    if cookie is not None:  # an unknown session of any shape is no session
        with client_for(site) as anonymous:
            anonymous.cookies.set("voxtrail_session", cookie)
            answer = anonymous.post("/admin/users", data=form, headers={"X-CSRF-Token": as_header})
            assert answer.status_code in (401, 303, 403), answer.status_code
    real = csrf_of(admin_client.get("/admin").text)
    assume(as_header != real.encode())
    if where == "form" and isinstance(token, str):
        response = admin_client.post("/admin/users", data={**form, "csrf_token": token})
    else:
        response = admin_client.post("/admin/users", data=form, headers={"X-CSRF-Token": as_header})
    assert response.status_code in (400, 403), response.status_code
    assert admin_client.post("/logout", headers={"X-CSRF-Token": as_header}).status_code in (400, 403)
    assert accounts.get_user(engine, "mallory") is None


@given(host=header_bytes, forwarded=header_bytes, path=st.sampled_from(["/admin/", "/login/", "/", "/events/"]))
def test_host_and_forwarded_headers_never_steer_a_redirect(site, host, forwarded, path):
    with client_for(site) as client:
        response = client.get(path, headers={"host": host, "x-forwarded-for": forwarded,
                                             "x-forwarded-host": forwarded, "x-forwarded-proto": forwarded})
    assert response.status_code < 500
    if "location" in response.headers:
        location = response.headers["location"]
        assert location.startswith("/") and not location.startswith("//"), location
