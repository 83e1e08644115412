"""``voxtrail keys``: rotation interrupted by kill -9 mid-pass, resumed, then retire; on all three databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from voxtrail.cli import app
from voxtrail.config import Settings
from voxtrail.event import EventBatch
from test_cli import assert_one_line_error, voxtrail_in_process
from voxtrail.keys import Keyring, KeyringError, format_key_line, read_key_file
from voxtrail.store import Store
from voxtrail.store.reencrypt import key_usage, load_state
from voxtrail.store.schema import tts_events
from voxtrail.store.verify import verify
from voxtrail.transforms.encrypt import decrypt_value, is_encrypted, key_id_of

KEY_A = bytes(range(32))
FIELDS = ("ref_audio_url", "text_input")
PLAIN_ROWS, ENCRYPTED_ROWS = 10, 50


@pytest.fixture
def key_env(tmp_path, monkeypatch):
    """A key file holding key 'ka' only; the environment every voxtrail process of the test sees."""
    path = tmp_path / "keys"
    path.write_text(format_key_line("ka", KEY_A) + "\n")
    os.chmod(path, 0o600)
    monkeypatch.delenv("VOXTRAIL_KEYS", raising=False)
    monkeypatch.setenv("VOXTRAIL_KEY_FILE", str(path))
    monkeypatch.setenv("VOXTRAIL_ENCRYPT_FIELDS", ",".join(FIELDS))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return path


def records(start: int, n: int) -> list[dict]:
    base = datetime(2026, 11, 1)
    return [{
        "request_id": f"req-{i:03d}", "ts": base + timedelta(seconds=i), "status": "success", "source": "http",
        "ref_audio_url": None if i % 7 == 3 else f"https://cdn.example.com/voices/{i}.wav",
        "text_input": f"第{i}句：请合成这段文字 / sentence {i}",
    } for i in range(start, start + n)]


def store_rows(url: str) -> None:
    """Rows stored in plaintext before encryption was on, then rows encrypted under 'ka'."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VOXTRAIL_ENCRYPT_FIELDS", "none")
        with Store.open(url, settings=Settings(db=url, tz="UTC")) as store:
            store.write(EventBatch.from_records(records(0, PLAIN_ROWS)))
    with Store.open(url, settings=Settings(db=url, tz="UTC")) as store:
        assert store.encrypt_fields == FIELDS
        store.write(EventBatch.from_records(records(PLAIN_ROWS, ENCRYPTED_ROWS)))


def stored(engine: sa.Engine) -> list:
    c = tts_events.c
    with engine.connect() as conn:
        return conn.execute(sa.select(c.id, c.request_id, c.row_hash, *(c[f] for f in FIELDS)).order_by(c.id)).all()


def state_of(engine: sa.Engine):
    with engine.connect() as conn:
        return load_state(conn)


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def kill_after_first_batch(url: str, engine: sa.Engine) -> None:
    """Run 'keys rotate' in its own process and kill -9 it once a batch has committed."""
    command = [sys.executable, "-m", "voxtrail", "keys", "rotate", "--db", url, "--batch-size", "10",
               "--pause", "0.5"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            state = state_of(engine)
            if state is not None and state.after_id > 0:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"rotate ended before it could be killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def test_rotation_killed_midway_resumes_then_retires(db_url, key_env):
    store_rows(db_url)
    with Store.open(db_url, settings=Settings(db=db_url, tz="UTC")) as store:
        check_rotation(db_url, store.engine, key_env)


def check_rotation(db_url: str, engine: sa.Engine, key_env) -> None:
    before = stored(engine)
    assert {key_id_of(r.text_input) for r in before[PLAIN_ROWS:]} == {"ka"}
    assert not any(is_encrypted(r.text_input) for r in before[:PLAIN_ROWS])

    kill_after_first_batch(db_url, engine)

    keys, _ = read_key_file(key_env)
    assert list(keys)[0] == "ka" and len(keys) == 2
    kb = list(keys)[-1]
    state = state_of(engine)
    assert state.target == kb and not state.done and 0 < state.after_id < len(before)
    assert state.rows_scanned == state.after_id  # ids are 1..60: one count per committed row
    for row in stored(engine):
        kids = {key_id_of(getattr(row, f)) for f in FIELDS if getattr(row, f) is not None}
        if row.id <= state.after_id:
            assert kids == {kb}, row  # plaintext rows got encrypted too
        else:
            assert kids <= {"ka"} and (kids or row.id <= PLAIN_ROWS)

    refused = cli("keys", "retire", "ka", "--db", db_url)
    assert refused.exit_code == 1 and "still encrypts stored values" in refused.output

    resumed = cli("keys", "reencrypt", "--db", db_url, "--batch-size", "7", "--json")
    assert resumed.exit_code == 0, resumed.output
    final = orjson.loads(resumed.stdout)
    assert final["done"] and final["target"] == kb
    assert final["rows_scanned"] == len(before)  # nothing scanned twice, nothing skipped

    only_b = Keyring({kb: keys[kb]}, source="test")
    after = stored(engine)
    assert [r.row_hash for r in after] == [r.row_hash for r in before]  # hashes cover plaintext
    for old, new in zip(before, after):
        for f in FIELDS:
            if getattr(old, f) is None:
                assert getattr(new, f) is None
                continue
            assert key_id_of(getattr(new, f)) == kb
            plain = decrypt_value(getattr(new, f), only_b, f, new.request_id)
            assert plain == decrypt_value(getattr(old, f), Keyring(keys, source="test"), f, old.request_id)
    usage = key_usage(engine)
    with_url = sum(1 for r in before if r.ref_audio_url is not None)
    assert usage.encrypted == {"ref_audio_url": {kb: with_url}, "text_input": {kb: len(before)},
                               "output_audio_url": {}}
    assert usage.plaintext == {"ref_audio_url": 0, "text_input": 0, "output_audio_url": 0}
    assert verify(engine, only_b).ok

    listed = orjson.loads(cli("keys", "list", "--db", db_url, "--json").stdout)
    assert [(k["id"], k["active"]) for k in listed["keys"]] == [("ka", False), (kb, True)]
    assert listed["keys"][0]["values"] == {} and listed["keys"][1]["values"]["text_input"] == len(before)

    retired = cli("keys", "retire", "ka", "--db", db_url)
    assert retired.exit_code == 0, retired.output
    assert list(read_key_file(key_env)[0]) == [kb]


def test_missing_old_key_stops_the_pass_with_a_clear_error(sqlite_url, key_env):
    store_rows(sqlite_url)
    key_env.write_text(format_key_line("kother", bytes(32)) + "\n")  # 'ka' lost
    result = cli("keys", "reencrypt", "--db", sqlite_url, "--batch-size", "20")
    assert result.exit_code == 1
    message = result.stderr
    assert "'ka'" in message and str(key_env) in message and "no batch was committed" in message
    # The plaintext rows of the first batch were not half-written: the batch rolled back.
    with Store.open(sqlite_url, settings=Settings(db=sqlite_url, tz="UTC")) as store:
        assert state_of(store.engine) is None
        assert not any(is_encrypted(r.text_input) for r in stored(store.engine)[:PLAIN_ROWS])


def test_rotate_resume_adds_no_key_and_env_keys_are_not_rotated(sqlite_url, key_env, monkeypatch):
    store_rows(sqlite_url)
    added = cli("keys", "rotate", "--db", sqlite_url, "--no-reencrypt", "--json")
    keys, _ = read_key_file(key_env)
    assert added.exit_code == 0 and orjson.loads(added.stdout) == {"added_key": list(keys)[-1]}
    assert len(keys) == 2
    resumed = cli("keys", "rotate", "--resume", "--db", sqlite_url, "--json")
    assert resumed.exit_code == 0 and orjson.loads(resumed.stdout)["target"] == list(keys)[-1]
    assert list(read_key_file(key_env)[0]) == list(keys)
    monkeypatch.setenv("VOXTRAIL_KEYS", format_key_line("kenv", KEY_A))
    refused = cli("keys", "rotate", "--db", sqlite_url)
    assert refused.exit_code == 1 and "VOXTRAIL_KEYS" in refused.stderr and "key file" in refused.stderr


def test_init_creates_a_private_file_and_never_overwrites(tmp_path, key_env):
    path = tmp_path / "new" / "keys"
    created = cli("keys", "init", "--key-file", str(path))
    assert created.exit_code == 0 and created.stdout == ""  # no key material unless --print
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    content = path.read_text()
    again = cli("keys", "init", "--key-file", str(path), "--print")
    assert again.exit_code == 1 and "already exists" in again.stderr and path.read_text() == content
    printed = cli("keys", "init", "--key-file", str(tmp_path / "other"), "--print")
    kid, key = printed.stdout.strip().split(":")
    assert printed.exit_code == 0 and kid in read_key_file(tmp_path / "other")[0]


def test_reencryption_runs_while_events_are_written(db_url, key_env):
    """Batches and concurrent writes interleave without lock errors; a second pass catches rows a
    writer stored under the old key before it noticed the rotation."""
    import threading

    from voxtrail import keys as keys_mod
    from voxtrail.store.reencrypt import reencrypt

    store_rows(db_url)
    keys_mod.append_key(key_env, "kb", bytes(range(50, 82)))
    errors: list[BaseException] = []

    def write_more() -> None:
        try:
            with Store.open(db_url, settings=Settings(db=db_url, tz="UTC")) as writer:
                for start in range(100, 300, 10):
                    writer.write(EventBatch.from_records(records(start, 10)))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with Store.open(db_url, settings=Settings(db=db_url, tz="UTC")) as store:
        keyring = Keyring.load(store.settings)
        writer = threading.Thread(target=write_more)
        writer.start()
        first = reencrypt(store.engine, keyring, FIELDS, batch_size=5)
        writer.join()
        assert not errors, errors
        assert first.done and first.target == "kb"
        reencrypt(store.engine, keyring, FIELDS, batch_size=50)
        usage = key_usage(store.engine)
        assert set(usage.key_ids()) == {"kb"} and usage.encrypted["text_input"]["kb"] == 260


# --- ownership: keys another local user could have written are refused, as ssh refuses them -----

NOBODY = 65534


def test_a_key_file_of_another_user_is_refused_everywhere_keys_are_read(sqlite_url, key_env, tmp_path):
    os.chown(key_env, NOBODY, NOBODY)  # mode 0600 still: only its owner, nobody, could have written it
    with pytest.raises(KeyringError, match=r"belongs to nobody \(uid 65534\).*run 'chown root "):
        Keyring.load(None)
    env = {"VOXTRAIL_KEY_FILE": str(key_env)}
    listed = voxtrail_in_process("keys", "list", "--db", sqlite_url, env=env)
    assert listed.returncode == 1
    assert_one_line_error(listed, f"key file {key_env} belongs to nobody (uid 65534)")
    audit = tmp_path / "audit.jsonl"
    audit.write_text(orjson.dumps({"request_id": "r1", "user_id": 1, "text_input": "hello", "status": "success",
                                   "ref_audio_url": "voices/a.wav", "created_at": "2026-01-01 00:00:00"}).decode()
                     + "\n")
    imported = voxtrail_in_process("import", str(audit), "--format", "audit", "--db", sqlite_url, env=env)
    assert imported.returncode == 1  # encrypting ref_audio_url needs the keys: nothing is stored with theirs
    assert_one_line_error(imported, "belongs to nobody")
    with Store.open(sqlite_url, settings=Settings(db=sqlite_url, tz="UTC")) as store:
        assert store.count() == 0


@pytest.mark.parametrize("mode, refused", [(0o777, True), (0o770, True), (0o1777, False), (0o700, False)])
def test_a_key_file_in_a_directory_others_can_write_to_is_refused_unless_sticky(tmp_path, key_env, mode, refused):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    path = shared / "keys"
    path.write_text(format_key_line("kb", KEY_A) + "\n")
    os.chmod(path, 0o600)
    if refused:
        with pytest.raises(KeyringError, match=f"directory {shared} above key file .* 'chmod go-w {shared}'"):
            read_key_file(path)
        made = cli("keys", "init", "--key-file", str(shared / "new"))
        assert made.exit_code == 1 and "chmod go-w" in made.stderr and not (shared / "new").exists()
    else:
        assert list(read_key_file(path)[0]) == ["kb"]
