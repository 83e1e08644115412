"""Field encryption and keys: round trip, AAD binding, wrong/missing keys, key file rules, reloading."""

from __future__ import annotations

import base64
import logging
import os
import time

import polars as pl
import pytest
from web_support import fast_password_hashing  # noqa: F401 - a fixture

from voxtrail import keys as keys_mod
from voxtrail.config import ConfigError, Settings
from voxtrail.keys import Keyring, KeyringError, encrypted_fields, format_key_line, new_key
from voxtrail.transforms.encrypt import (
    DecryptionError, decrypt_frame, decrypt_value, encrypt_frame, is_encrypted, key_id_of,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


@pytest.fixture(autouse=True)
def no_ambient_keys(monkeypatch, tmp_path):
    """Nothing from the developer's environment or home directory leaks into a test."""
    for name in ("VOXTRAIL_KEYS", "VOXTRAIL_KEY_FILE", "VOXTRAIL_ENCRYPT_FIELDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def settings(**file) -> Settings:
    return Settings(db="sqlite://", tz="UTC", file=file)


def ring(**keys: bytes) -> Keyring:
    return Keyring(keys, source="test keys")


def frame() -> pl.DataFrame:
    return pl.DataFrame({
        "request_id": ["r1", "r2", "r3"],
        "ref_audio_url": ["https://cdn.example.com/voices/张三.wav", None, "s3://bucket/prompt 2.wav"],
        "text_input": ["你好，世界", "hello", None],
        "status": ["success", "failed", "success"],
    })


def write_key_file(path, *lines: str, mode: int = 0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    os.chmod(path, mode)
    return path


def test_round_trip_keeps_nulls_and_other_columns():
    keyring = ring(ka=KEY_A)
    original = frame()
    encrypted = encrypt_frame(original, keyring, ("ref_audio_url", "text_input"))
    values = encrypted["ref_audio_url"].to_list()
    assert values[1] is None and encrypted["text_input"][2] is None
    assert all(is_encrypted(v) and key_id_of(v) == "ka" for v in (values[0], values[2]))
    assert "张三" not in values[0] and "example" not in values[0]
    assert encrypted["status"].to_list() == original["status"].to_list()
    assert decrypt_frame(encrypted, keyring, ("ref_audio_url", "text_input")).equals(original)


def test_same_plaintext_encrypts_differently_and_is_not_encrypted_twice():
    keyring = ring(ka=KEY_A)
    f = pl.DataFrame({"request_id": ["a", "b"], "ref_audio_url": ["same.wav", "same.wav"]})
    once = encrypt_frame(f, keyring, ("ref_audio_url",))
    assert once["ref_audio_url"][0] != once["ref_audio_url"][1]  # random nonces
    assert encrypt_frame(once, keyring, ("ref_audio_url",)).equals(once)
    mixed = pl.DataFrame({"request_id": ["a", "c", "d"], "ref_audio_url": [once["ref_audio_url"][0], None, "x.wav"]})
    out = encrypt_frame(mixed, keyring, ("ref_audio_url",))["ref_audio_url"].to_list()
    assert out[0] == once["ref_audio_url"][0] and out[1] is None and is_encrypted(out[2])
    assert decrypt_value(out[2], keyring, "ref_audio_url", "d") == "x.wav"


def test_fields_absent_from_the_frame_are_ignored():
    f = pl.DataFrame({"request_id": ["a"], "status": ["success"]})
    assert encrypt_frame(f, ring(ka=KEY_A), ("ref_audio_url", "output_audio_url")).equals(f)


def test_plaintext_rows_from_before_encryption_read_as_they_are():
    assert decrypt_value("plain.wav", ring(ka=KEY_A), "ref_audio_url", "r1") == "plain.wav"
    assert decrypt_value(None, None, "ref_audio_url", "r1") is None
    # Text that merely starts with the prefix is not taken for a ciphertext.
    assert not is_encrypted("vx1: notes about version 1")
    assert decrypt_value("vx1:x:short", None, "text_input", "r1") == "vx1:x:short"


def test_ciphertext_moved_to_another_row_or_field_fails():
    keyring = ring(ka=KEY_A)
    value = encrypt_frame(frame(), keyring, ("ref_audio_url",))["ref_audio_url"][0]
    assert decrypt_value(value, keyring, "ref_audio_url", "r1") == "https://cdn.example.com/voices/张三.wav"
    with pytest.raises(DecryptionError, match=r"ref_audio_url of event 'r2'"):
        decrypt_value(value, keyring, "ref_audio_url", "r2")
    with pytest.raises(DecryptionError, match=r"output_audio_url of event 'r1'"):
        decrypt_value(value, keyring, "output_audio_url", "r1")


def test_wrong_key_under_the_same_id_fails_authentication():
    value = encrypt_frame(frame(), ring(ka=KEY_A), ("ref_audio_url",))["ref_audio_url"][0]
    with pytest.raises(DecryptionError, match="not the one that encrypted it, or the stored value was altered"):
        decrypt_value(value, ring(ka=KEY_B), "ref_audio_url", "r1")


def test_tampered_ciphertext_fails():
    keyring = ring(ka=KEY_A)
    value = encrypt_frame(frame(), keyring, ("ref_audio_url",))["ref_audio_url"][0]
    head, body = value.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[20] ^= 0x01
    tampered = f"{head}:{base64.urlsafe_b64encode(bytes(raw)).decode()}"
    with pytest.raises(DecryptionError, match=r"ref_audio_url of event 'r1'"):
        decrypt_value(tampered, keyring, "ref_audio_url", "r1")
    with pytest.raises(DecryptionError):
        decrypt_frame(pl.DataFrame({"request_id": ["r1"], "ref_audio_url": [tampered]}), keyring, ("ref_audio_url",))
    cut = value[:-1]  # no longer valid base64
    with pytest.raises(DecryptionError, match=r"ref_audio_url of event 'r2'"):
        decrypt_frame(pl.DataFrame({"request_id": ["r1", "r2"], "ref_audio_url": [value, cut]}), keyring,
                      ("ref_audio_url",))


def test_missing_key_is_a_clear_error_without_key_material(tmp_path):
    path = write_key_file(tmp_path / "keys", format_key_line("kb", KEY_B))
    value = encrypt_frame(frame(), ring(ka=KEY_A), ("ref_audio_url",))["ref_audio_url"][0]
    keyring = Keyring.load(settings(keys={"file": str(path)}))
    with pytest.raises(KeyringError) as info:
        decrypt_value(value, keyring, "ref_audio_url", "r1")
    message = str(info.value)
    assert "'ka'" in message and str(path) in message and "backup" in message
    for secret in (KEY_A, KEY_B):
        assert base64.b64encode(secret).decode() not in message
    with pytest.raises(KeyringError, match="no keys are configured"):
        decrypt_value(value, None, "ref_audio_url", "r1")


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = write_key_file(tmp_path / "keys", format_key_line("ka", KEY_A), mode=0o644)
    with pytest.raises(KeyringError, match=r"accessible by group or others \(mode 0644\).*chmod 600"):
        Keyring.load(settings(), key_file=path)
    os.chmod(path, 0o600)
    assert Keyring.load(settings(), key_file=path).ids() == ("ka",)


def test_key_file_format_comments_and_last_line_active(tmp_path):
    path = write_key_file(tmp_path / "keys", "# comment", format_key_line("old", KEY_A), "",
                          "new:" + base64.urlsafe_b64encode(KEY_B).decode().rstrip("="))
    keyring = Keyring.load(settings(), key_file=path)
    assert keyring.ids() == ("old", "new") and keyring.active_id == "new"
    assert keyring.key("new") == KEY_B
    assert "KEY" not in repr(keyring) and base64.b64encode(KEY_A).decode() not in repr(keyring)


@pytest.mark.parametrize("line, message", [
    ("ka:" + base64.b64encode(b"short").decode(), "is 5 bytes, AES-256 needs 32"),
    ("ka:not base64!!", "not valid base64"),
    ("no separator", "expected 'id:base64key'"),
])
def test_malformed_key_lines_say_where(tmp_path, line, message):
    path = write_key_file(tmp_path / "keys", "# keys", line)
    with pytest.raises(KeyringError, match=message) as info:
        Keyring.load(settings(), key_file=path)
    assert f"{path} line 2" in str(info.value)


def test_duplicate_key_id_is_refused(tmp_path):
    path = write_key_file(tmp_path / "keys", format_key_line("ka", KEY_A), format_key_line("ka", KEY_B))
    with pytest.raises(KeyringError, match="appears twice"):
        Keyring.load(settings(), key_file=path)


def test_env_keys_win_over_the_key_file(tmp_path, monkeypatch):
    path = write_key_file(tmp_path / "keys", format_key_line("kfile", KEY_A))
    monkeypatch.setenv("VOXTRAIL_KEY_FILE", str(path))
    assert Keyring.load(settings()).ids() == ("kfile",)
    monkeypatch.setenv("VOXTRAIL_KEYS", f"{format_key_line('k1', KEY_A)}, {format_key_line('k2', KEY_B)}")
    keyring = Keyring.load(settings())
    assert keyring.ids() == ("k1", "k2") and keyring.active_id == "k2" and keyring.path is None
    monkeypatch.setenv("VOXTRAIL_KEYS", "k1:AAAA")
    with pytest.raises(KeyringError, match="VOXTRAIL_KEYS entry 1"):
        Keyring.load(settings())


def test_key_file_location_precedence(tmp_path, monkeypatch):
    toml_file = write_key_file(tmp_path / "toml-keys", format_key_line("ktoml", KEY_A))
    env_file = write_key_file(tmp_path / "env-keys", format_key_line("kenv", KEY_A))
    default = write_key_file(tmp_path / "xdg" / "voxtrail" / "keys", format_key_line("kdefault", KEY_A))
    assert keys_mod.key_file_path(settings()) == default
    assert Keyring.load(settings()).ids() == ("kdefault",)
    assert Keyring.load(settings(keys={"file": str(toml_file)})).ids() == ("ktoml",)
    monkeypatch.setenv("VOXTRAIL_KEY_FILE", str(env_file))
    assert Keyring.load(settings(keys={"file": str(toml_file)})).ids() == ("kenv",)


def test_no_keys_gives_none_unless_asked_to_create(tmp_path, caplog):
    assert Keyring.load(settings()) is None
    with caplog.at_level(logging.WARNING, logger="voxtrail.keys"):
        keyring = Keyring.load(settings(), create_default=True)
    path = tmp_path / "xdg" / "voxtrail" / "keys"
    assert keyring is not None and keyring.path == path
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert keyring.active_id.startswith("k") and len(keyring.active_id) == 9
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in m and "back it up" in m for m in warning)
    assert base64.b64encode(keyring.key(keyring.active_id)).decode() not in caplog.text
    # A second load uses the same key rather than making another.
    assert Keyring.load(settings(), create_default=True).ids() == keyring.ids()


def test_keyring_reloads_a_rotated_key_file(tmp_path, monkeypatch):
    path = write_key_file(tmp_path / "keys", format_key_line("ka", KEY_A))
    keyring = Keyring.load(settings(), key_file=path)
    old = encrypt_frame(frame(), keyring, ("ref_audio_url",))
    keys_mod.append_key(path, "kb", KEY_B)
    assert keyring.active_id == "ka"  # checked at most once a second
    monkeypatch.setattr(keys_mod, "RELOAD_CHECK_SECONDS", 0.0)
    assert keyring.active_id == "kb"
    new = encrypt_frame(frame(), keyring, ("ref_audio_url",))
    assert key_id_of(new["ref_audio_url"][0]) == "kb"
    assert decrypt_frame(old, keyring, ("ref_audio_url",)).equals(frame())
    # A broken file keeps the keys already loaded (a server must not lose them mid-flight).
    os.chmod(path, 0o644)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert keyring.ids() == ("ka", "kb")


def test_retire_refuses_the_active_key_and_unknown_ids(tmp_path):
    path = write_key_file(tmp_path / "keys", "# mine", format_key_line("ka", KEY_A), format_key_line("kb", KEY_B))
    with pytest.raises(KeyringError, match="active key"):
        keys_mod.remove_key(path, "kb")
    with pytest.raises(KeyringError, match="has no key 'kz'"):
        keys_mod.remove_key(path, "kz")
    keys_mod.remove_key(path, "ka")
    assert path.read_text().startswith("# mine\n") and Keyring.load(settings(), key_file=path).ids() == ("kb",)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_encrypted_fields_setting(monkeypatch, caplog):
    assert encrypted_fields(settings()) == ("ref_audio_url",)
    assert encrypted_fields(settings(encrypt={"fields": ["ref_audio_url", "text_input"]})) == (
        "ref_audio_url", "text_input")
    with pytest.raises(ConfigError, match="can be encrypted are ref_audio_url, text_input, output_audio_url"):
        encrypted_fields(settings(encrypt={"fields": ["user_id"]}))
    monkeypatch.setenv("VOXTRAIL_ENCRYPT_FIELDS", "output_audio_url, text_input")
    assert encrypted_fields(settings(encrypt={"fields": []})) == ("output_audio_url", "text_input")
    keys_mod._warned.discard("fields-off")
    monkeypatch.setenv("VOXTRAIL_ENCRYPT_FIELDS", "none")
    with caplog.at_level(logging.WARNING, logger="voxtrail.keys"):
        assert encrypted_fields(settings()) == ()
    assert "field encryption is off" in caplog.text


def test_new_keys_are_random_and_aes256():
    assert len(new_key()) == 32 and new_key() != new_key()


# --- the read side: auditors see plaintext, a missing key is a marker, text search says why not ---

SECRET_URL = "https://cdn.example.com/voices/王小明-prompt.wav"
LONG_TEXT = "请把这段很长的文字合成语音。" * 10


@pytest.fixture
def encrypted_app(tmp_path, monkeypatch, fast_password_hashing):
    from datetime import datetime, timedelta, timezone

    from web_support import add_user, client_for, login, make_app

    from voxtrail.event import EventBatch

    key_file = write_key_file(tmp_path / "keys", format_key_line("ka", KEY_A))
    monkeypatch.setenv("VOXTRAIL_KEY_FILE", str(key_file))
    monkeypatch.setenv("VOXTRAIL_ENCRYPT_FIELDS", "ref_audio_url,text_input,output_audio_url")
    app = make_app(f"sqlite:///{tmp_path / 'e.db'}",
                   routers=("voxtrail.web.auth", "voxtrail.web.events", "voxtrail.web.dashboard"))
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    app.state.store.write(EventBatch.from_records([
        {"request_id": f"ev-{i}", "ts": now - timedelta(minutes=i), "status": "success", "source": "http",
         "ref_audio_url": SECRET_URL, "text_input": LONG_TEXT if i == 1 else f"短句 {i}",
         "output_audio_url": f"/out/{i}.wav"} for i in range(3)
    ]))
    add_user(app, "auditor", "auditor")
    add_user(app, "viewer", "viewer")
    client = client_for(app)
    login(client, "auditor")
    app.state.viewer = client_for(app)
    login(app.state.viewer, "viewer")
    yield app, client, key_file
    app.state.store.close()


def test_auditors_read_plaintext_and_the_database_holds_none(encrypted_app):
    app, client, _ = encrypted_app
    with app.state.store.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT ref_audio_url, text_input, output_audio_url FROM tts_events").all()
    assert all(is_encrypted(v) for row in raw for v in row)
    event = client.get("/api/v1/events/ev-1").json()
    assert (event["ref_audio_url"], event["text_input"], event["output_audio_url"]) == (
        SECRET_URL, LONG_TEXT, "/out/1.wav")
    assert "decryption_errors" not in event
    listed = {e["request_id"]: e["text_excerpt"] for e in client.get("/api/v1/events").json()["events"]}
    assert listed["ev-1"] == LONG_TEXT[:80] + "…" and listed["ev-2"] == "短句 2"
    page = client.get("/events/ev-1")
    assert page.status_code == 200 and "王小明-prompt.wav" in page.text and "vx1:ka:" not in page.text


def test_text_search_on_encrypted_text_says_why_not(encrypted_app):
    _, client, _ = encrypted_app
    response = client.get("/api/v1/events", params={"q": "短句"})
    assert response.status_code == 400 and "text_input is stored encrypted" in response.text
    page = client.get("/events", params={"q": "短句"})
    assert page.status_code == 400 and "text_input is stored encrypted" in page.text
    listing = client.get("/events")  # the page offers no search box it would then refuse
    assert listing.status_code == 200 and 'name="q"' not in listing.text
    assert "No text search: text_input is stored encrypted" in listing.text


def test_a_missing_key_shows_a_marker_not_ciphertext_nor_a_500(encrypted_app, monkeypatch):
    app, client, key_file = encrypted_app
    key_file.write_text(format_key_line("kb", KEY_B) + "\n")  # 'ka' lost
    monkeypatch.setattr(keys_mod, "RELOAD_CHECK_SECONDS", 0.0)
    response = client.get("/api/v1/events/ev-0")
    assert response.status_code == 200
    event = response.json()
    assert event["ref_audio_url"].startswith("⚠ not decrypted: key 'ka' is not available")
    assert set(event["decryption_errors"]) == {"ref_audio_url", "text_input", "output_audio_url"}
    assert "vx1:ka:" not in response.text and str(key_file) not in response.text
    page = client.get("/events/ev-0")
    assert page.status_code == 200 and "not decrypted" in page.text
    excerpt = client.get("/api/v1/events").json()["events"][0]["text_excerpt"]
    assert excerpt.startswith("⚠ not decrypted")


def test_a_moved_ciphertext_reads_as_not_authentic(encrypted_app):
    app, client, _ = encrypted_app
    with app.state.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE tts_events SET ref_audio_url = (SELECT ref_audio_url FROM tts_events "
                             "WHERE request_id = 'ev-1') WHERE request_id = 'ev-2'")
    event = client.get("/api/v1/events/ev-2").json()
    assert event["ref_audio_url"].startswith("⚠ not decrypted: the value does not authenticate")
    assert client.get("/api/v1/events/ev-1").json()["ref_audio_url"] == SECRET_URL


def test_viewers_get_neither_plaintext_nor_ciphertext(encrypted_app):
    app, _, _ = encrypted_app
    viewer = app.state.viewer
    assert viewer.get("/api/v1/events/ev-1").status_code == 403
    for path in ("/", "/api/v1/stats?range=7d", "/api/v1/stats/options?range=7d"):
        response = viewer.get(path)
        assert response.status_code == 200, path
        for leaked in ("王小明", "短句", "/out/", "vx1:ka:"):
            assert leaked not in response.text, (path, leaked)
