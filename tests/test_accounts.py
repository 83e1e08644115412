"""Users, API tokens and sessions in the store (all three databases), and their CLI commands."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from voxtrail.store import Store, accounts
from voxtrail.store.schema import api_tokens, users, web_sessions
from web_support import fast_password_hashing  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("fast_password_hashing")

PASSWORD = "correct horse battery"


@pytest.fixture
def store(db_url):
    with Store.open(db_url) as s:
        yield s


def test_users_add_list_role_remove(store):
    e = store.engine
    assert accounts.count_users(e) == 0
    alice = accounts.add_user(e, "alice", "admin", PASSWORD)
    accounts.add_user(e, "bob", "viewer", PASSWORD)
    assert (alice.name, alice.role) == ("alice", "admin")
    assert [u.name for u in accounts.list_users(e)] == ["alice", "bob"]
    with pytest.raises(accounts.AccountError, match="already exists"):
        accounts.add_user(e, "alice", "viewer", PASSWORD)
    with pytest.raises(accounts.AccountError, match="unknown role"):
        accounts.add_user(e, "carol", "root", PASSWORD)
    with pytest.raises(accounts.AccountError, match="too short"):
        accounts.add_user(e, "carol", "viewer", "short")
    with pytest.raises(accounts.AccountError, match="invalid user name"):
        accounts.add_user(e, "no spaces", "viewer", PASSWORD)
    accounts.set_role(e, "bob", "auditor")
    assert accounts.get_user(e, "bob").role == "auditor"
    accounts.remove_user(e, "bob")
    assert accounts.get_user(e, "bob") is None
    with pytest.raises(accounts.AccountError, match="no user named 'bob'"):
        accounts.remove_user(e, "bob")


#: Spellings that name "victim1" on some database unless names are compared exactly: MySQL's
#: PAD SPACE collations ignore trailing spaces; the rest must not pass for it either.
NEAR_VICTIM = ["victim1 ", "victim1  ", "victim1\t", "victim1\n", "victim1\0", " victim1", "Victim1", "VICTIM1",
               "ｖｉｃｔｉｍ１", "vіctim1", "victim1\u200b", "victim1\u00a0"]


def test_names_are_compared_exactly_on_every_database(store):
    """Issue 10 #5: on MariaDB "victim1 " logged in as victim1, with its own throttle."""
    e = store.engine
    accounts.add_user(e, "victim1", "admin", PASSWORD)
    for near in NEAR_VICTIM:
        assert accounts.authenticate(e, near, PASSWORD) is None, repr(near)
        assert accounts.get_user(e, near) is None, repr(near)
        assert accounts.recorded_failures(e, near) is None, repr(near)
        with pytest.raises(accounts.AccountError):
            accounts.set_role(e, near, "viewer")
        with pytest.raises(accounts.AccountError):
            accounts.set_password(e, near, "another password")
        with pytest.raises(accounts.AccountError):
            accounts.remove_user(e, near)
    assert accounts.get_user(e, "victim1").role == "admin"
    assert accounts.authenticate(e, "victim1", PASSWORD).name == "victim1"
    assert accounts.recorded_failures(e, "victim1") == (0, None)


@pytest.mark.parametrize("name, message", [
    ("victim1 ", "invalid user name"),
    ("victim1\n", "invalid user name"),  # "$" matched before a final newline
    ("ｖｉｃｔｉｍ１", "write it as 'victim1'"),
    ("Victim1", "too like the existing user 'victim1'"),
    ("VICTIM1", "too like the existing user 'victim1'"),
    ("x" * 129, "invalid user name 'xxxxx"),
])
def test_ambiguous_or_invalid_names_are_refused(store, name, message):
    accounts.add_user(store.engine, "victim1", "viewer", PASSWORD)
    with pytest.raises(accounts.AccountError, match=message) as refused:
        accounts.add_user(store.engine, name, "admin", PASSWORD)
    assert len(str(refused.value)) < 200
    assert [u.name for u in accounts.list_users(store.engine)] == ["victim1"]


def test_names_in_any_script_are_valid():
    for name in ("张伟", "müller", "ольга", "o'brien".replace("'", "."), "a@b.example", "x+y-z_1"):
        assert accounts.check_name(name) == name


def test_passwords_are_argon2_hashes_and_authenticate(store):
    e = store.engine
    accounts.add_user(e, "alice", "auditor", PASSWORD)
    with e.connect() as conn:
        stored = conn.execute(sa.select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.authenticate(e, "alice", PASSWORD).name == "alice"
    assert accounts.authenticate(e, "alice", "wrong password") is None
    assert accounts.authenticate(e, "nobody", PASSWORD) is None
    assert accounts.get_user(e, "alice").failed_logins == 1
    accounts.authenticate(e, "alice", "wrong password")
    accounts.authenticate(e, "alice", "wrong password")
    assert accounts.get_user(e, "alice").failed_logins == 3
    assert accounts.authenticate(e, "alice", PASSWORD) is not None
    assert accounts.get_user(e, "alice").failed_logins == 0


def test_weak_parameters_are_rehashed_at_login(store):
    e = store.engine
    accounts.add_user(e, "alice", "viewer", PASSWORD)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with e.begin() as conn:
        conn.execute(users.update().values(password_hash=weak))
    assert accounts.authenticate(e, "alice", PASSWORD) is not None
    with e.connect() as conn:
        rehashed = conn.execute(sa.select(users.c.password_hash)).scalar_one()
    assert rehashed != weak and not accounts._hasher.check_needs_rehash(rehashed)
    assert accounts.authenticate(e, "alice", PASSWORD) is not None  # and it still opens


def test_password_change_and_removal_end_sessions(store):
    e = store.engine
    alice = accounts.add_user(e, "alice", "admin", PASSWORD)
    raw1, _ = accounts.create_session(e, alice.id, timedelta(hours=1))
    raw2, _ = accounts.create_session(e, alice.id, timedelta(hours=1))
    assert accounts.count_sessions(e, "alice") == 2
    accounts.set_password(e, "alice", "another password")
    assert accounts.load_session(e, raw1, timedelta(hours=1)) is None
    assert accounts.authenticate(e, "alice", PASSWORD) is None
    raw3, _ = accounts.create_session(e, alice.id, timedelta(hours=1))
    assert accounts.load_session(e, raw3, timedelta(hours=1)).user.name == "alice"
    accounts.remove_user(e, "alice")
    assert accounts.count_sessions(e) == 0
    assert accounts.load_session(e, raw2, timedelta(hours=1)) is None


def test_sessions_store_only_hashes_and_expire(store):
    e = store.engine
    alice = accounts.add_user(e, "alice", "viewer", PASSWORD)
    raw, session = accounts.create_session(e, alice.id, timedelta(hours=1))
    with e.connect() as conn:
        id_hash = conn.execute(sa.select(web_sessions.c.id_hash)).scalar_one()
    assert id_hash == accounts.sha256_hex(raw) and raw not in id_hash
    loaded = accounts.load_session(e, raw, timedelta(minutes=30))
    assert loaded.user.name == "alice" and loaded.csrf_token == session.csrf_token
    assert accounts.load_session(e, raw + "x", timedelta(minutes=30)) is None
    # idle: last seen 31 minutes ago
    with e.begin() as conn:
        conn.execute(web_sessions.update().values(last_seen_at=accounts.utcnow() - timedelta(minutes=31)))
    assert accounts.load_session(e, raw, timedelta(minutes=30)) is None
    assert accounts.count_sessions(e) == 0  # deleted when found stale
    # absolute expiry
    raw, _ = accounts.create_session(e, alice.id, timedelta(hours=1))
    with e.begin() as conn:
        conn.execute(web_sessions.update().values(expires_at=accounts.utcnow() - timedelta(seconds=1)))
    assert accounts.load_session(e, raw, timedelta(hours=8)) is None
    raw, _ = accounts.create_session(e, alice.id, timedelta(hours=1))
    with e.begin() as conn:
        conn.execute(web_sessions.update().values(last_seen_at=accounts.utcnow() - timedelta(hours=3)))
    assert accounts.purge_sessions(e, timedelta(hours=2)) == 1


def test_tokens_create_verify_revoke(store):
    e = store.engine
    token, secret = accounts.create_token(e, "shipper", "ingest", created_by="cli")
    assert secret.startswith("vxt_") and len(secret) == 4 + 43
    assert token.prefix == secret[:8] and token.active and token.last_used_at is None
    with e.connect() as conn:
        stored = conn.execute(sa.select(api_tokens.c.token_hash)).scalar_one()
    assert stored == accounts.sha256_hex(secret)
    with pytest.raises(accounts.AccountError, match="active token named 'shipper' exists"):
        accounts.create_token(e, "shipper")
    with pytest.raises(accounts.AccountError, match="unknown scope"):
        accounts.create_token(e, "x", "write")
    assert accounts.verify_token(e, secret).name == "shipper"
    assert accounts.verify_token(e, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert accounts.verify_token(e, "not-a-token") is None
    accounts.revoke_token(e, "shipper")
    assert accounts.verify_token(e, secret) is None
    with pytest.raises(accounts.AccountError, match="already revoked"):
        accounts.revoke_token(e, str(token.id))
    again, _ = accounts.create_token(e, "shipper", "read")  # the name is free again
    assert accounts.revoke_token(e, again.id).id == again.id
    assert [t.active for t in accounts.list_tokens(e)] == [False, False]


def test_last_used_is_written_at_most_once_a_minute(store):
    e = store.engine
    _, secret = accounts.create_token(e, "t")
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(e, "before_cursor_execute", record)
    try:
        for _ in range(5):
            accounts.verify_token(e, secret)
    finally:
        sa.event.remove(e, "before_cursor_execute", record)
    assert sum(s.lstrip().upper().startswith("UPDATE") for s in statements) == 1
    first = accounts.list_tokens(e)[0].last_used_at
    with e.begin() as conn:
        conn.execute(api_tokens.update().values(last_used_at=first - timedelta(minutes=2)))
    accounts.verify_token(e, secret)
    assert accounts.list_tokens(e)[0].last_used_at > first - timedelta(minutes=2)


# --- CLI -----------------------------------------------------------------------------------------

def voxtrail(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtrail", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_user_commands(sqlite_url):
    db = ["--db", sqlite_url]
    added = voxtrail("user", "add", "alice", "--role", "admin", "--password-stdin", "--json", *db,
                     stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["role"] == "admin"
    assert PASSWORD not in added.stdout + added.stderr
    with Store.open(sqlite_url) as s, s.engine.connect() as conn:
        stored = conn.execute(sa.select(users.c.password_hash)).scalar_one()
    assert not PasswordHasher().check_needs_rehash(stored)  # argon2-cffi's current defaults
    assert voxtrail("user", "add", "bob", "--role", "viewer", "--password-stdin", *db, stdin=PASSWORD).returncode == 0
    listed = json.loads(voxtrail("user", "list", "--json", *db).stdout)
    assert [(u["name"], u["role"]) for u in listed] == [("alice", "admin"), ("bob", "viewer")]
    assert "password" not in json.dumps(listed).replace("password_changed_at", "")
    assert voxtrail("user", "role", "bob", "auditor", *db).returncode == 0
    assert voxtrail("user", "passwd", "bob", "--password-stdin", *db, stdin="brand new password\n").returncode == 0
    with Store.open(sqlite_url) as s:
        assert accounts.authenticate(s.engine, "bob", "brand new password").role == "auditor"
    assert voxtrail("user", "remove", "bob", *db).returncode == 0
    table = voxtrail("user", "list", *db).stdout
    assert "alice" in table and "bob" not in table


@pytest.mark.parametrize("args, stdin, message", [
    (["user", "add", "alice", "--role", "admin", "--password-stdin"], "pw\n", "password too short"),
    (["user", "add", "alice", "--role", "god", "--password-stdin"], PASSWORD, "Invalid value for '--role'"),
    (["user", "add", "a b", "--role", "admin", "--password-stdin"], PASSWORD, "invalid user name"),
    (["user", "add", "alice ", "--role", "admin", "--password-stdin"], PASSWORD, "invalid user name 'alice '"),
    (["user", "add", "ａｌｉｃｅ", "--role", "admin", "--password-stdin"], PASSWORD, "write it as 'alice'"),
    (["user", "add", "alice", "--role", "admin"], "", "pass --password-stdin"),
    (["user", "remove", "ghost"], None, "no user named 'ghost'"),
    (["user", "passwd", "ghost", "--password-stdin"], PASSWORD, "no user named 'ghost'"),
    (["token", "revoke", "ghost"], None, "no active token named 'ghost'"),
    (["token", "create", "t", "--scope", "admin"], None, "Invalid value for '--scope'"),
])
def test_account_command_errors_are_one_line(sqlite_url, args, stdin, message):
    result = voxtrail(*args, "--db", sqlite_url, stdin=stdin)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_token_commands(sqlite_url):
    db = ["--db", sqlite_url]
    created = voxtrail("token", "create", "node-1", "--json", *db)
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    secret = info["token"]
    assert secret.startswith("vxt_") and info["scope"] == "ingest" and info["prefix"] == secret[:8]
    plain = voxtrail("token", "create", "prom", "--scope", "read", *db)
    assert plain.stdout.strip().startswith("vxt_") and "shown only now" in plain.stderr
    listed = voxtrail("token", "list", "--json", *db)
    tokens = json.loads(listed.stdout)
    assert [(t["name"], t["scope"], t["active"]) for t in tokens] == [
        ("node-1", "ingest", True), ("prom", "read", True)]
    assert secret not in listed.stdout and plain.stdout.strip() not in listed.stdout
    assert all(t["last_used_at"] is None for t in tokens)
    assert voxtrail("token", "revoke", str(info["id"]), *db).returncode == 0
    table = voxtrail("token", "list", *db).stdout
    assert secret not in table and "node-1" in table
    assert json.loads(voxtrail("token", "list", "--json", *db).stdout)[0]["revoked_at"] is not None


def test_password_prompt_on_a_terminal_asks_twice_without_echo(sqlite_url):
    import os
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "voxtrail", "user", "add", "tess", "--role", "viewer",
                             "--db", sqlite_url], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    position = 0

    def read_until(marker: bytes) -> None:
        """Wait for the next prompt: typing ahead would be flushed when echo is turned off."""
        nonlocal seen, position
        while marker not in seen[position:]:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, seen
            seen += os.read(master, 4096)
        position = seen.index(marker, position) + len(marker)

    read_until(b"Password:")
    os.write(master, b"first try pw\n")
    read_until(b"Repeat for confirmation:")
    os.write(master, b"typo in it\n")
    read_until(b"do not match")  # click asks again
    read_until(b"Password:")
    os.write(master, PASSWORD.encode() + b"\n")
    read_until(b"Repeat for confirmation:")
    os.write(master, PASSWORD.encode() + b"\n")
    read_until(b"user tess added")
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    assert PASSWORD.encode() not in seen and b"first try pw" not in seen  # never echoed
    with Store.open(sqlite_url) as s:
        assert accounts.authenticate(s.engine, "tess", PASSWORD) is not None
