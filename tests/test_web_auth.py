"""Web security: sessions, cookies, CSRF, login throttling, roles, and no route left open."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends

from voxtrail.store import accounts
from voxtrail.store.schema import web_sessions
from voxtrail.web.app import PUBLIC_PATHS, ROUTER_MODULES
from voxtrail.web.auth import CurrentUser, require_user
from voxtrail.web.throttle import LoginThrottle, Throttle
from web_support import PASSWORD, add_user, client_for, csrf_of, fast_password_hashing, login, make_app  # noqa: F401

pytestmark = pytest.mark.usefixtures("fast_password_hashing")


class FakeClock:
    """Monotonic seconds for the throttle's memory; ``wall()`` moves the same way for the users
    table's recorded failures (written at the real time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self):
        return accounts.utcnow() + timedelta(seconds=self.now - 1000.0)

    def throttle(self, **kw) -> LoginThrottle:
        return LoginThrottle(clock=self, wall_clock=self.wall, **kw)


@pytest.fixture
def app(sqlite_url):
    app = make_app(sqlite_url)
    yield app
    app.state.store.close()


def cookie_header(response, name: str) -> str:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith(name + "="):
            return value
    raise AssertionError(f"no {name} cookie set")


@pytest.mark.parametrize("secure", [False, True])
def test_session_cookie_flags(sqlite_url, secure):
    app = make_app(sqlite_url, secure_cookies=secure)
    add_user(app, "alice", "viewer")
    with client_for(app) as client:
        if secure:  # a Secure cookie is only sent back over https
            client.base_url = client.base_url.copy_with(scheme="https")
        response = login(client, "alice")
        cookie = cookie_header(response, "voxtrail_session")
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "path", "samesite", "max-age"} <= flags
        assert "samesite=lax" in cookie.lower()
        assert ("secure" in flags) == secure
        raw = cookie.split(";")[0].split("=", 1)[1]
        assert len(raw) >= 43  # 32 random bytes
        with app.state.store.engine.connect() as conn:
            stored = conn.execute(web_sessions.select()).one()
        assert stored.id_hash == accounts.sha256_hex(raw)
        assert client.get("/admin").status_code == 403  # logged in, but a viewer
    app.state.store.close()


def test_wrong_password_and_unknown_user_look_the_same(app):
    add_user(app, "alice", "admin")
    with client_for(app) as client:
        wrong = login(client, "alice", "not the password", expect=401)
        unknown = login(client, "mallory", "not the password", expect=401)
        assert "Wrong user name or password." in wrong.text
        assert wrong.text.replace("alice", "X") == unknown.text.replace("mallory", "X")
        assert "not the password" not in wrong.text
        assert "voxtrail_session" not in wrong.headers.get("set-cookie", "")


def test_login_form_needs_its_csrf_token(app):
    add_user(app, "alice", "admin")
    with client_for(app) as client:
        client.get("/login")
        missing = client.post("/login", data={"username": "alice", "password": PASSWORD})
        forged = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": "forged"})
        assert missing.status_code == forged.status_code == 403
        fresh = client_for(app)  # the form's token without its cookie (another browser)
        token = csrf_of(client.get("/login").text)
        assert fresh.post("/login", data={"username": "alice", "password": PASSWORD,
                                          "csrf_token": token}).status_code == 403


def test_every_post_form_needs_the_session_csrf_token(app):
    add_user(app, "alice", "admin")
    with client_for(app) as client:
        login(client, "alice")
        page = client.get("/admin")
        token = csrf_of(page.text)
        form = {"name": "bob", "role": "viewer", "password": PASSWORD}
        assert client.post("/admin/users", data=form).status_code == 403
        assert client.post("/admin/users", data={**form, "csrf_token": "x" * 43}).status_code == 403
        assert accounts.get_user(app.state.store.engine, "bob") is None
        assert client.post("/logout").status_code == 403
        assert client.post("/admin/users", data={**form, "csrf_token": token}).status_code == 303
        assert client.post("/admin/users", data={**form, "name": "carol"},
                           headers={"X-CSRF-Token": token}).status_code == 303
        assert accounts.get_user(app.state.store.engine, "carol") is not None


def test_logout_ends_the_session(app):
    add_user(app, "alice", "admin")
    with client_for(app) as client:
        login(client, "alice")
        raw = client.cookies.get("voxtrail_session")
        token = csrf_of(client.get("/admin").text)
        out = client.post("/logout", data={"csrf_token": token})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert accounts.count_sessions(app.state.store.engine) == 0
        client.cookies.set("voxtrail_session", raw)  # replaying the old cookie does not help
        assert client.get("/admin").status_code == 303


def test_a_login_never_keeps_a_planted_session_id(app):
    add_user(app, "alice", "admin")
    with client_for(app) as planted, client_for(app) as victim:
        login(planted, "alice")
        raw = planted.cookies.get("voxtrail_session")
        form = victim.get("/login")
        domain = next(c.domain for c in planted.cookies.jar if c.name == "voxtrail_session")
        victim.cookies.set("voxtrail_session", raw, domain=domain)  # e.g. set by a sibling subdomain
        response = victim.post("/login", data={"username": "alice", "password": PASSWORD,
                                               "csrf_token": csrf_of(form.text)})
        assert response.status_code == 303
        assert victim.cookies.get("voxtrail_session") not in (None, raw)
        assert planted.get("/admin").status_code == 303  # the planted id no longer works
        assert victim.get("/admin").status_code == 200
        assert accounts.count_sessions(app.state.store.engine) == 1


def test_idle_and_expired_sessions_send_to_login(app):
    add_user(app, "alice", "admin")
    with client_for(app) as client:
        login(client, "alice")
        assert client.get("/admin").status_code == 200
        with app.state.store.engine.begin() as conn:
            conn.execute(web_sessions.update().values(last_seen_at=accounts.utcnow() - timedelta(hours=3)))
        response = client.get("/admin")
        assert response.status_code == 303 and response.headers["location"] == "/login?next=%2Fadmin"


def test_next_only_leads_to_this_site(app):
    add_user(app, "alice", "viewer")
    for target, expected in [("/admin?x=1", "/admin?x=1"), ("//evil.example/", "/"), ("https://evil.example/", "/"),
                             ("/\\evil.example", "/"), ("javascript:alert(1)", "/")]:
        with client_for(app) as client:
            assert login(client, "alice", next_url=target).headers["location"] == expected


def test_throttle_doubles_the_wait_after_free_attempts():
    clock = FakeClock()
    throttle = Throttle(free_attempts=3, base_delay=1.0, max_delay=8.0, clock=clock)
    waits = []
    for _ in range(7):
        throttle.failed("k")
        waits.append(throttle.wait("k"))
    assert waits == [0, 0, 1, 2, 4, 8, 8]
    clock.now += 8
    assert throttle.wait("k") == 0
    throttle.succeeded("k")
    throttle.failed("k")
    assert throttle.wait("k") == 0  # success started over
    clock.now += 3601
    assert throttle._entry("k", clock.now) is None  # forgotten an hour after the last failure


def test_failed_logins_are_slowed_per_user_whether_or_not_it_exists(app):
    clock = FakeClock()
    app.state.login_throttle = clock.throttle()
    add_user(app, "alice", "admin")
    with client_for(app) as client:
        for name in ("alice", "ghost"):
            for _ in range(5):
                login(client, name, "wrong password", expect=401)
            locked = login(client, name, "wrong password", expect=429)
            assert int(locked.headers["retry-after"]) >= 1 and "Too many failed attempts" in locked.text
        # Even the right password waits while locked; the lock passes with time.
        login(client, "alice", PASSWORD, expect=429)
        clock.now += 2
        login(client, "alice", PASSWORD, expect=303)
    # A locked user name does not lock others from the same address (under its limit).
    add_user(app, "bob", "viewer")
    with client_for(app) as client:
        login(client, "bob", PASSWORD, expect=303)


def test_a_locked_user_has_no_other_spelling(db_url):
    """Issue 10 #5: on MariaDB "victim1 " had 5 free guesses of its own and got in while
    "victim1" was locked. Every spelling is refused or shares the lock, on every database."""
    clock = FakeClock()
    app = make_app(db_url)
    app.state.login_throttle = clock.throttle()
    add_user(app, "victim1", "admin")
    try:
        with client_for(app) as client:
            for _ in range(5):
                login(client, "victim1", "wrong password", expect=401)
            login(client, "victim1", PASSWORD, expect=429)
            for near in ("victim1 ", "victim1  ", "Victim1", "VICTIM1", "ｖｉｃｔｉｍ１", "victim1\t"):
                response = login(client, near, PASSWORD, expect=None)
                assert response.status_code in (401, 429), (near, response.status_code)
                assert "voxtrail_session" not in response.headers.get("set-cookie", "")
            assert login(client, "Victim1", PASSWORD, expect=None).status_code == 429  # the same lock
    finally:
        app.state.store.close()


def test_a_flood_of_other_names_does_not_unlock_a_user(app):
    """Issue 10 #16: after 100,000 failures on other names the throttle had forgotten "admin"."""
    clock = FakeClock()
    throttle = app.state.login_throttle = clock.throttle(max_keys=50)
    add_user(app, "admin", "admin")
    with client_for(app) as client:
        for _ in range(5):
            login(client, "admin", "wrong password", expect=401)
        for _ in range(5):  # more guesses, as an attacker waiting out each lock would make
            accounts.authenticate(app.state.store.engine, "admin", "wrong password")
        for i in range(500):  # then many names from many addresses
            throttle.failed(f"name{i}", f"198.51.{i // 250}.{i % 250}")
        assert len(throttle.by_user) <= 50 and len(throttle.by_address) <= 50
        assert throttle.by_user.wait("admin") == 0  # memory forgot admin...
        login(client, "admin", PASSWORD, expect=429)  # ...the users table did not
        app.state.login_throttle = clock.throttle()  # nor does a restart
        locked = login(client, "admin", PASSWORD, expect=429)
        assert 20 < int(locked.headers["retry-after"]) <= 33  # 10 failures: 2 ** 5 s
        clock.now += 3601  # an hour after the last failure the lock is forgotten
        login(client, "admin", PASSWORD, expect=303)


def test_invalid_names_share_one_small_throttle_entry(app):
    clock = FakeClock()
    throttle = app.state.login_throttle = clock.throttle()
    with client_for(app) as client:
        for i in range(3):
            login(client, f"{'x' * 5000}{i} ", "wrong password", expect=401)
    assert len(throttle.by_user) == 1 and all(len(k) < 20 for k in throttle.by_user._entries)


def test_failed_logins_are_slowed_per_address(app):
    clock = FakeClock()
    app.state.login_throttle = clock.throttle()
    add_user(app, "alice", "admin")
    with client_for(app) as client:
        for i in range(20):  # many names, one address
            login(client, f"user{i}", "wrong password", expect=401)
        login(client, "alice", PASSWORD, expect=429)
        clock.now += 2
        login(client, "alice", PASSWORD, expect=303)


def test_roles_are_ordered_and_checked(sqlite_url):
    app = make_app(sqlite_url)
    probe = APIRouter()

    @probe.get("/probe/auditor")
    def auditor_page(user: CurrentUser = Depends(require_user("auditor"))):
        return {"user": user.name, "role": user.role}

    @probe.get("/api/v1/probe/admin")
    def admin_api(user: CurrentUser = Depends(require_user("admin"))):
        return {"user": user.name}

    app.include_router(probe)
    for name, role in (("v", "viewer"), ("a", "auditor"), ("boss", "admin")):
        add_user(app, name, role)
    expected = {"viewer": (403, 403, 403), "auditor": (200, 403, 403), "admin": (200, 200, 200)}
    for name, role in (("v", "viewer"), ("a", "auditor"), ("boss", "admin")):
        with client_for(app) as client:
            login(client, name)
            got = (client.get("/probe/auditor").status_code, client.get("/api/v1/probe/admin").status_code,
                   client.get("/admin").status_code)
            assert got == expected[role], role
    with client_for(app) as client:
        page = client.get("/probe/auditor?x=1")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fprobe%2Fauditor%3Fx%3D1"
        api = client.get("/api/v1/probe/admin")
        assert api.status_code == 401 and api.json()["error"].startswith("not logged in")
    with client_for(app) as client:
        login(client, "v")
        denied = client.get("/api/v1/probe/admin")
        assert denied.status_code == 403 and "admin" in denied.json()["error"]
    app.state.store.close()


def all_routes(app):
    """(path, methods) of every route, including those of included routers."""
    out = []

    def walk(routes):
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes)
            else:
                out.append((route.path, getattr(route, "methods", None) or {"GET"}))

    walk(app.routes)
    return out


def test_nothing_is_served_without_a_session_but_the_public_paths(sqlite_url):
    """Enumerates every route of the full app: a route added later without auth fails here."""
    app = make_app(sqlite_url, routers=ROUTER_MODULES)
    routes = all_routes(app)
    paths = {path for path, _ in routes}
    assert {"/login", "/logout", "/healthz", "/admin", "/api/v1/events", "/metrics"} <= paths
    checked = 0
    with client_for(app) as client:
        for path, methods in routes:
            if path == "/login" or path == "/healthz" or path.startswith("/static"):
                continue
            url = re.sub(r"\{[^}]+\}", "1", path)
            for method in methods - {"HEAD", "OPTIONS"}:
                response = client.request(method, url)
                if response.status_code == 303:
                    assert response.headers["location"].startswith("/login?next="), (method, path)
                else:
                    assert response.status_code == 401, (method, path, response.status_code, response.text[:200])
                checked += 1
        assert client.get("/healthz").json() == {"status": "ok"}
    assert checked >= 8
    assert set(PUBLIC_PATHS) == {"/login", "/healthz", "/static"}
    app.state.store.close()


def test_static_files_are_public_and_only_files(app):
    with client_for(app) as client:
        css = client.get("/static/voxtrail.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]
        assert client.get("/static/../app.py").status_code == 404
        assert client.get("/static/%2e%2e/app.py").status_code == 404


def test_security_headers_and_no_inline_scripts(app):
    with client_for(app) as client:
        response = client.get("/login")
    csp = response.headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", csp).group(1)
    assert script_src.strip() == "'self'"
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"
    # The CSP forbids inline scripts, so no template may contain one (JSON data blocks are fine).
    templates = Path(__file__).resolve().parent.parent / "src/voxtrail/web/templates"
    for template in templates.glob("*.html"):
        for tag in re.findall(r"<script\b[^>]*>", template.read_text()):
            assert "src=" in tag or 'type="application/json"' in tag, f"inline script in {template.name}: {tag}"
        assert not re.search(r"\son[a-z]+\s*=", template.read_text()), f"inline event handler in {template.name}"


def test_openapi_and_docs_are_not_served(app):
    with client_for(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404


def assert_security_headers(response, what) -> None:
    for name, value in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                        ("cache-control", "no-store"), ("referrer-policy", "same-origin")):
        assert response.headers.get(name) == value, (what, response.status_code, name)
    assert "script-src 'self'" in response.headers.get("content-security-policy", ""), what


def test_error_responses_carry_the_security_headers(sqlite_url, caplog):
    """Issue 10 #10: 404, 405, 400, 500 and 503 answers had no CSP, nosniff or no-store."""
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from voxtrail.store import StoreError

    app = make_app(sqlite_url, routers=ROUTER_MODULES)
    probe = APIRouter()

    @probe.get("/api/v1/probe/bug")
    def bug():
        raise RuntimeError("a bug")

    @probe.get("/probe/bug")
    def page_bug():
        raise RuntimeError("a bug")

    @probe.get("/api/v1/probe/down")
    def down():
        raise StoreError("database gone")

    @probe.get("/api/v1/probe/busy")
    def busy():
        raise sa.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached")

    @probe.get("/api/v1/probe/number")
    def number(n: int):
        return {"n": n}

    app.include_router(probe)
    add_user(app, "alice", "viewer")
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False) as client:
        answers = {
            "404": client.get("/no/such/page"),
            "404 api": client.get("/api/v1/nothing"),
            "405": client.get("/logout"),
            "401": client.get("/metrics"),
            "403 csrf": client.post("/login", data={"username": "x"}),
            "400 form": client.post("/login", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
            "422": client.get("/api/v1/probe/number?n=many"),
            "500": client.get("/api/v1/probe/bug"),
            "500 page": client.get("/probe/bug"),
            "503": client.get("/api/v1/probe/down"),
        }
        for _ in range(3):
            answers["503 busy"] = client.get("/api/v1/probe/busy")
        login(client, "alice")
        answers["403"] = client.get("/admin")
        answers["400"] = client.get("/api/v1/stats?range=forever")
    for what, response in answers.items():
        assert response.status_code == int(what.split()[0]), (what, response.status_code)
        assert_security_headers(response, what)
    assert answers["500"].json() == {"error": "internal error: the server log says more"}
    assert "a bug" not in answers["500 page"].text and "<h1>500</h1>" in answers["500 page"].text
    assert answers["503 busy"].headers["retry-after"] == "2" and "busy" in answers["503 busy"].json()["error"]
    busy_lines = [r for r in caplog.records if "database busy" in r.getMessage()]
    assert len(busy_lines) == 1 and busy_lines[0].exc_info is None  # once, not per request, no traceback
    app.state.store.close()


@pytest.mark.parametrize("path, location", [
    ("/admin/", "/admin"),
    ("/admin/access-log/", "/admin/access-log"),
])
def test_redirects_never_name_the_host_the_client_sent(app, path, location):
    """Issue 10 #16: the trailing-slash redirect said Location: http://evil.example/admin."""
    with client_for(app) as client:
        for host in ("evil.example", "evil.example:8080", "127.0.0.1:8000"):
            response = client.get(path, headers={"Host": host})
            if response.status_code in (301, 302, 303, 307, 308):
                assert response.headers["location"] == location, (path, host)
                assert "evil" not in response.headers["location"]
            else:
                assert response.status_code == 404


@pytest.mark.parametrize("location, relative", [
    (b"http://evil.example/admin", b"/admin"),
    (b"HTTPS://evil.example:8443/a/b?c=1&d=%2F", b"/a/b?c=1&d=%2F"),
    (b"http://evil.example", b"/"),
    (b"http://evil.example//evil.example/x", b"/evil.example/x"),  # never protocol-relative
    (b"//evil.example/", b"/evil.example/"),
    (b"/\\evil.example/", b"/evil.example/"),
    (b"/login?next=%2Fadmin", b"/login?next=%2Fadmin"),
])
def test_relative_location(location, relative):
    from voxtrail.web.middleware import relative_location

    assert relative_location(location) == relative


def test_hsts_only_over_https(app):
    with client_for(app) as client:
        assert "strict-transport-security" not in client.get("/login").headers
        client.base_url = client.base_url.copy_with(scheme="https")
        for response in (client.get("/login"), client.get("/nowhere"), client.get("/admin")):
            assert response.headers["strict-transport-security"] == "max-age=31536000"
