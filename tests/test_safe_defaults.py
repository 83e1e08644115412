"""Safe defaults: private files whatever the umask, TLS options that reach the drivers, and no
secret (database password, API token, session id, user password) in output, logs or errors."""

from __future__ import annotations

import logging
import os
import ssl
import stat
import subprocess
from contextlib import contextmanager

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from helpers_recorder import wait_until
from test_cli import VOXTRAIL, assert_one_line_error, voxtrail
from test_store import make_batch
from voxtrail import Recorder
from voxtrail.store import Store, accounts
from voxtrail.store.engine import StoreError, make_engine, normalize_url, shown_url
from web_support import PASSWORD, Server, csrf_of, self_signed_cert

SECRET = "S3cretPW"


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def with_password(url: str, password: str = SECRET) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


# --- files -------------------------------------------------------------------------------------

def test_sqlite_database_its_wal_and_scratch_files_are_private_under_umask_022(tmp_path):
    path = tmp_path / "vx.db"
    with umask(0o022):
        with Store.open(f"sqlite:///{path}") as store:
            store.write(make_batch(50))
            companions = [p for p in tmp_path.iterdir() if p.name.startswith("vx.db-")]
            assert {p.name for p in companions} >= {"vx.db-wal", "vx.db-shm"}
            for p in [path, *companions]:
                assert mode_of(p) == 0o600, p
            scratch = store._writer._dir
            assert mode_of(scratch) == 0o700
            slots = [os.path.join(scratch, f) for f in os.listdir(scratch)]
            assert slots and all(mode_of(f) == 0o600 for f in slots), [(f, oct(mode_of(f))) for f in slots]


def test_an_existing_readable_database_is_warned_about_once_and_left_alone(tmp_path, caplog):
    path = tmp_path / "shared.db"
    Store.open(f"sqlite:///{path}").close()
    os.chmod(path, 0o644)
    caplog.set_level(logging.WARNING, logger="voxtrail.store")
    for _ in range(2):
        Store.open(f"sqlite:///{path}").close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "voxtrail.store"]
    assert len(warnings) == 1 and "chmod 600" in warnings[0] and "644" in warnings[0]
    assert mode_of(path) == 0o644  # the owner's choice: told, not overridden


def test_the_spool_is_private_under_umask_000(tmp_path):
    spool = tmp_path / "spool"
    with umask(0):
        rec = Recorder(db="postgresql://postgres@127.0.0.1:1/down", spool_dir=spool, max_backoff=0.2)
        try:
            rec.record(text_input="what the user asked for")
            rec.flush(0.1)
            for directory, dirs, files in os.walk(spool):
                assert mode_of(directory) == 0o700, directory
                for name in files:
                    assert mode_of(os.path.join(directory, name)) == 0o600, name
            assert any(files for _, _, files in os.walk(spool))
        finally:
            rec.close(timeout=0)


# --- TLS options -------------------------------------------------------------------------------

class _Captured(Exception):
    """Stops a connection attempt once its parameters are captured: no server is contacted."""


def connect_params(url: str) -> tuple[dict, object]:
    """What the driver's connect() would receive for ``url`` (nothing is sent to a server)."""
    u, dialect = normalize_url(url)
    engine = make_engine(u, dialect)
    captured: dict = {}

    @event.listens_for(engine, "do_connect")
    def grab(_dialect, _record, _cargs, cparams):
        captured.update(cparams)
        raise _Captured

    with pytest.raises(_Captured):
        engine.connect()
    engine.dispose()
    return captured, engine


def test_postgresql_tls_parameters_reach_psycopg_and_the_key_passphrase_is_not_shown(tmp_path):
    url = (f"postgresql://tts:{SECRET}@db.example/tts?sslmode=verify-full&sslrootcert={tmp_path}/ca.pem"
           f"&sslcert={tmp_path}/client.pem&sslkey={tmp_path}/client.key&sslpassword=KeyPass1")
    params, engine = connect_params(url)
    assert params["sslmode"] == "verify-full"
    assert (params["sslrootcert"], params["sslcert"], params["sslkey"]) == (
        f"{tmp_path}/ca.pem", f"{tmp_path}/client.pem", f"{tmp_path}/client.key")
    assert params["sslpassword"] == "KeyPass1" and params["password"] == SECRET
    shown = shown_url(engine.url)
    assert "sslmode=verify-full" in shown and "KeyPass1" not in shown and SECRET not in shown
    assert "KeyPass1" not in engine.url.render_as_string(hide_password=True)


@pytest.mark.parametrize("query, verify_mode, check_hostname", [
    ("ssl_ca={ca}", ssl.CERT_REQUIRED, True),
    ("ssl_ca={ca}&ssl_cert={cert}&ssl_key={key}&ssl_verify_cert=true&ssl_verify_identity=true",
     ssl.CERT_REQUIRED, True),
    ("ssl_ca={ca}&ssl_check_hostname=false", ssl.CERT_REQUIRED, False),
    ("ssl_ca={ca}&ssl_verify_identity=false", ssl.CERT_REQUIRED, False),
    ("ssl_ca={ca}&ssl_verify_cert=false", ssl.CERT_NONE, False),
])
def test_mysql_tls_parameters_become_one_verifying_context(tmp_path, query, verify_mode, check_hostname):
    cert, key = self_signed_cert(tmp_path)
    params, _ = connect_params("mysql://tts@db.example/tts?" + query.format(ca=cert, cert=cert, key=key))
    ctx = params["ssl"]
    assert isinstance(ctx, ssl.SSLContext)
    assert (ctx.verify_mode, ctx.check_hostname) == (verify_mode, check_hostname)
    assert any(dict(x[0] for x in c["subject"]).get("commonName") == "127.0.0.1" for c in ctx.get_ca_certs())
    # PyMySQL would rebuild its TLS settings from these strings and drop the CA: they must not reach it.
    assert params.get("ssl_verify_cert") is None and params.get("ssl_verify_identity") is None


def test_mysql_tls_mistakes_are_one_clear_error():
    with pytest.raises(StoreError, match=r"ssl_ca=/nonexistent/ca.pem\): No such file"):
        connect_params("mysql://tts@db.example/tts?ssl_ca=/nonexistent/ca.pem")
    with pytest.raises(StoreError, match="ssl_verify_cert='maybe' in the database URL: use true or false"):
        connect_params("mysql://tts@db.example/tts?ssl_verify_cert=maybe")
    params, _ = connect_params("mysql://tts@db.example/tts?ssl_disabled=false")
    assert params["ssl_disabled"] is False  # not the string "false", which PyMySQL reads as true


@pytest.mark.parametrize("dialect, query, about", [
    ("postgresql", "sslmode=require", "SSL"),
    ("mysql", "ssl_ca={ca}", "SSL"),
])
def test_tls_required_by_the_url_fails_in_one_line_without_the_password(fresh_db_url, tmp_path, dialect, query,
                                                                         about):
    cert, _ = self_signed_cert(tmp_path)
    url = with_password(fresh_db_url(dialect)) + "?" + query.format(ca=cert)
    proc = voxtrail("status", "--db", url)
    assert SECRET not in proc.stdout + proc.stderr
    if proc.returncode == 0:  # this server speaks TLS (and trusts our CA): nothing to refuse
        return
    assert_one_line_error(proc, about, ":***@", "TLS parameters")


# --- secrets in output and logs ----------------------------------------------------------------

@pytest.mark.parametrize("url", [
    f"postgresql://postgres:{SECRET}@127.0.0.1:5432/nope",
    f"mysql://root:{SECRET}@127.0.0.1:3306/test",
    f"postgresql://postgres@127.0.0.1:5432/nope?password={SECRET}",
    f"mysql://nobody:{SECRET}@127.0.0.1:1/test",
    f"postgresql://postgres:{SECRET}@127.0.0.1:notaport/x",
    f"oracle://scott:{SECRET}@db/orcl",
])
def test_a_database_url_with_a_password_fails_in_one_line_without_it(url):
    proc = voxtrail("status", "--db", url)
    assert_one_line_error(proc)
    assert SECRET not in proc.stderr + proc.stdout
    assert "***" in proc.stderr or "?password=" in url  # a query password is dropped from the URL shown


def test_serve_status_and_recorder_never_show_passwords_tokens_or_session_ids(fresh_db_url, tmp_path, caplog):
    url = with_password(fresh_db_url("postgresql"))  # the server trusts local users: the password is ignored
    with Store.open(url) as store:
        accounts.add_user(store.engine, "alice", "admin", PASSWORD)
        _, token = accounts.create_token(store.engine, "node-1", scope="ingest")
    status = voxtrail("status", "--db", url)
    assert status.returncode == 0, status.stderr
    assert SECRET not in status.stdout + status.stderr and "postgres:***@" in status.stdout + status.stderr

    wrong = "vxt_" + "W" * 43
    with Server("--db", url) as server:
        assert "postgres:***@" in server.stdout_lines[0]
        with httpx.Client(base_url=server.url, follow_redirects=False, timeout=30) as http:
            form = http.get("/login")
            http.post("/login", data={"username": "alice", "password": PASSWORD, "next": "/admin",
                                      "csrf_token": csrf_of(form.text)})
            session = http.cookies.get("voxtrail_session")
            assert session and http.get("/admin").status_code == 200
            good = http.post("/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                             json={"request_id": "r1", "ts": "2025-03-01T00:00:00Z", "status": "success"})
            assert good.status_code == 200
        caplog.set_level(logging.DEBUG)  # the Recorder, httpx and httpcore at their most talkative
        rec = Recorder(url=server.url, token=wrong, spool_dir=tmp_path / "spool", max_backoff=0.2)
        try:
            rec.record(text_input="hello")
            assert wait_until(lambda: "401" in (rec.stats()["last_error"] or ""))
            error = rec.stats()["last_error"]
        finally:
            rec.close(timeout=0.2)
    logged = server.output()
    assert "POST /api/v1/events" in logged and "GET /admin" in logged  # requests are logged...
    for secret in (SECRET, PASSWORD, token, wrong, session):  # ...secrets are not
        assert secret not in logged
        assert secret not in caplog.text and secret not in error
    assert any(r.name.startswith("httpx") for r in caplog.records)  # the client's own log was captured


def test_redis_and_collector_urls_with_a_password_are_masked(tmp_path):
    proc = voxtrail("collect", "--redis", f"redis://:{SECRET}@127.0.0.1:1/0", "--db", f"sqlite:///{tmp_path}/c.db",
                    "--drain")
    assert_one_line_error(proc, "redis://:***@127.0.0.1:1/0")
    assert SECRET not in proc.stderr + proc.stdout
    rec = Recorder(url=f"http://node:{SECRET}@127.0.0.1:1", spool_dir=tmp_path / "spool", max_backoff=0.2)
    try:
        rec.record(text_input="hello")
        assert wait_until(lambda: "cannot reach collector" in (rec.stats()["last_error"] or ""))
        assert SECRET not in rec.stats()["last_error"] and "node:***@" in rec.stats()["last_error"]
    finally:
        rec.close(timeout=0)


def test_sql_errors_do_not_carry_bound_values(db_url):
    with Store.open(db_url) as store, store.engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError) as failure:
            conn.execute(sa.text("SELECT name FROM voxtrail_users WHERE name = :name AND no_such_column = 1"),
                         {"name": SECRET})
    assert SECRET not in str(failure.value) and "hidden" in str(failure.value)


def with_stdin(text: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VOXTRAIL, *args], input=text, capture_output=True, text=True, timeout=120)


def test_user_passwords_never_reach_the_output(sqlite_url):
    added = with_stdin("a long enough S3cretPW\n", "user", "add", "bob", "--role", "viewer", "--password-stdin",
                       "--db", sqlite_url)
    assert added.returncode == 0, added.stderr
    again = with_stdin("another S3cretPW\n", "user", "add", "bob", "--role", "viewer", "--password-stdin",
                       "--db", sqlite_url)
    short = with_stdin("S3cret\n", "user", "passwd", "bob", "--password-stdin", "--db", sqlite_url)
    assert_one_line_error(again, "already exists")
    assert_one_line_error(short, "too short")
    for proc in (added, again, short):
        assert "S3cret" not in proc.stdout + proc.stderr


# --- the SQLite writer's scratch slots keep no batch once it is written --------------------------

SCRATCH_TEXT = "scratch-secret"


def scratch_holding_text(directory) -> list[str]:
    """Files under ``directory`` (the scratch directories) holding a stored event's text."""
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if SCRATCH_TEXT.encode() in open(os.path.join(root, name), "rb").read():
                found.append(os.path.join(root, name))
    return found


@pytest.fixture
def scratch_root(tmp_path, monkeypatch):
    """This test's own temporary directory, where every scratch directory it makes lands."""
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_a_written_batch_leaves_no_text_in_a_scratch_slot_while_the_store_stays_open(tmp_path, scratch_root):
    from datetime import datetime, timezone

    from voxtrail.event import EventBatch
    from voxtrail.sources.files.importer import Importer

    audit = tmp_path / "audit.jsonl"
    audit.write_text("".join(
        f'{{"request_id": "a{i}", "user_id": 1, "text_input": "{SCRATCH_TEXT} {i}", "status": "success", '
        f'"created_at": "2026-01-01 00:00:0{i}"}}\n' for i in range(5)))
    with Store.open(f"sqlite:///{tmp_path / 'vx.db'}") as store:
        store.write(EventBatch.from_records([{"request_id": "w1", "ts": datetime.now(timezone.utc), "status": "success",
                                              "source": "http", "text_input": f"{SCRATCH_TEXT} written"}]))
        assert os.listdir(scratch_root) and scratch_holding_text(scratch_root) == []
        Importer(store, fmt="audit").run([str(audit)])  # a tail between two passes looks like this
        assert store.count() == 6 and scratch_holding_text(scratch_root) == []
    assert os.listdir(scratch_root) == []


def test_no_scratch_file_with_text_remains_after_an_import_or_a_recorders_close(tmp_path, scratch_root):
    from test_cli import voxtrail_in_process

    audit = tmp_path / "audit.jsonl"
    audit.write_text(f'{{"request_id": "a1", "user_id": 1, "text_input": "{SCRATCH_TEXT}", "status": "success", '
                     f'"created_at": "2026-01-01 00:00:00"}}\n')
    url = f"sqlite:///{tmp_path / 'vx.db'}"
    assert voxtrail_in_process("import", str(audit), "--db", url).returncode == 0
    assert os.listdir(scratch_root) == []
    rec = Recorder(db=url, spool_dir=tmp_path / "spool")
    rec.record(text_input=f"{SCRATCH_TEXT} recorded")
    assert rec.flush(30)
    assert wait_until(lambda: os.listdir(scratch_root) and not scratch_holding_text(scratch_root))
    assert rec.close()
    assert os.listdir(scratch_root) == []
