"""The hash chain: every kind of tampering is found by verify, checkpoints pin history, and
retention and re-delivery keep the chain valid — on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

import polars as pl
import pytest
import sqlalchemy as sa

from voxtrail.event import EventBatch
from voxtrail.store import Store, chain
from voxtrail.store.verify import make_checkpoint, verify

T0 = datetime(2026, 11, 1, 8, 0, 0, 123456)


def batch(ids, *, start=T0, step=timedelta(minutes=1), **extra) -> EventBatch:
    rows = []
    for i, rid in enumerate(ids):
        rows.append({
            "request_id": rid, "ts": start + step * i, "status": "success" if i % 5 else "failed",
            "latency_ms": 1234.5 + i / 3, "text_length": 10 + i, "emotion": "开心" if i % 2 else "calm",
            "user_id": f"u{i % 3}", "text_input": f"第{i}句 text \x1f with a separator",
            "attributes": json.dumps({"z": i, "a": [0.1, 2.5e-7], "nested": {"b": True, "a": None}}),
            "emotion_vector": json.dumps([0.1 * (i % 8)] * 8), "source": "recorder", **extra,
        })
    return EventBatch.from_records(rows)


@pytest.fixture
def store(db_url):
    s = Store.open(db_url)
    yield s
    s.close()


def written(store) -> Store:
    store.write(batch([f"a{i}" for i in range(6)]))
    store.write(batch([f"b{i}" for i in range(4)], ref_audio_url="/voices/alice.wav"))
    # A re-delivery with duplicates: only c0..c2 are new, and are re-bound to each other.
    store.write(batch(["a1", "c0", "a2", "c1", "c2"]))
    return store


def sql(store, statement: str, **params) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def problem(store, **kw):
    return verify(store.engine, store.keyring, **kw).problem


def test_a_clean_chain_verifies_with_json_and_encrypted_fields(store):
    written(store)
    report = verify(store.engine, store.keyring)
    assert report.ok, report.problem
    assert report.rows_checked == 13 and report.links == 4
    with store.engine.connect() as conn:
        url = conn.execute(sa.text("SELECT ref_audio_url FROM tts_events WHERE request_id = 'b0'")).scalar()
    assert url.startswith("vx1:")  # the hash covers plaintext; verify decrypted it


def test_polars_and_python_row_hashes_agree():
    frame = pl.DataFrame({"request_id": ["x", "y\x1fz"], "status": ["success", "failed"]})
    sealed = chain.seal(frame, {"source": "http"})
    content = chain.canonical(frame, {"source": "http"})
    assert sealed.row_hashes[0] == chain.row_hash_of(content[0], None)
    assert sealed.row_hashes[1] == chain.row_hash_of(content[1], "x")
    assert "\x1f\x1fz" in content[1]  # a separator inside a value is doubled, so it cannot fake a field


@pytest.mark.parametrize("change, where", [
    ("UPDATE tts_events SET latency_ms = latency_ms + 1 WHERE request_id = 'a3'", "a3"),
    ("UPDATE tts_events SET text_input = 'changed' WHERE request_id = 'c1'", "c1"),
    ("UPDATE tts_events SET status = 'success' WHERE request_id = 'a0'", "a0"),
])
def test_an_update_is_found_at_its_row(store, change, where):
    written(store)
    sql(store, change)
    found = problem(store)
    assert found is not None and f"'{where}'" in found.message and "does not match its hash" in found.message


def test_a_deleted_row_is_found(store):
    written(store)
    sql(store, "DELETE FROM tts_events WHERE request_id = 'a2'")
    found = problem(store)
    assert found is not None and "'a3'" in found.message  # the next row no longer follows its predecessor


def test_a_deleted_last_row_of_a_write_is_found(store):
    written(store)
    sql(store, "DELETE FROM tts_events WHERE request_id = 'a5'")
    found = problem(store)
    assert found is not None and "written with 6 rows; 5 are there" in found.message


def test_an_inserted_row_is_found_even_with_a_copied_hash(store):
    written(store)
    with store.engine.begin() as conn:
        row = dict(conn.execute(sa.text("SELECT * FROM tts_events WHERE request_id = 'a4'")).mappings().one())
        row.update(id=None, request_id="forged")
        row.pop("id")
        conn.execute(sa.text(f"INSERT INTO tts_events ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"),
                     {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items()})
    found = problem(store)
    assert found is not None and "'forged'" in found.message and "no link" in found.message


def test_an_inserted_row_inside_a_write_is_found(store):
    written(store)
    # Free an id inside the first write, then insert a row with it.
    sql(store, "DELETE FROM tts_events WHERE request_id = 'a2'")
    sql(store, "UPDATE tts_events SET request_id = 'a2' WHERE request_id = 'c2'")
    found = problem(store)
    assert found is not None


def test_reordered_rows_are_found(store):
    written(store)
    with store.engine.begin() as conn:
        ids = dict(conn.execute(sa.text("SELECT request_id, id FROM tts_events WHERE request_id IN ('a1', 'a2')")).all())
        conn.execute(sa.text("UPDATE tts_events SET id = :tmp WHERE id = :a"), {"tmp": 10_000, "a": ids["a1"]})
        conn.execute(sa.text("UPDATE tts_events SET id = :a WHERE id = :b"), {"a": ids["a1"], "b": ids["a2"]})
        conn.execute(sa.text("UPDATE tts_events SET id = :b WHERE id = :tmp"), {"b": ids["a2"], "tmp": 10_000})
    found = problem(store)
    assert found is not None and "'a2'" in found.message


def test_an_altered_or_removed_link_is_found(store):
    written(store)
    sql(store, "UPDATE voxtrail_chain SET row_count = 5 WHERE seq = 2")
    assert "link 2" in problem(store).message
    sql(store, "UPDATE voxtrail_chain SET row_count = 6 WHERE seq = 2")
    assert problem(store) is None
    sql(store, "DELETE FROM tts_events WHERE request_id LIKE 'b%'")
    sql(store, "DELETE FROM voxtrail_chain WHERE seq = 3")
    assert "links 3..3 are missing" in problem(store).message


def test_a_moved_ciphertext_is_found(store):
    written(store)
    with store.engine.begin() as conn:
        cipher = conn.execute(sa.text("SELECT ref_audio_url FROM tts_events WHERE request_id = 'b0'")).scalar()
        conn.execute(sa.text("UPDATE tts_events SET ref_audio_url = :c WHERE request_id = 'b1'"), {"c": cipher})
    assert "does not authenticate" in problem(store).message


def test_a_checkpoint_exposes_a_recomputed_history(store):
    written(store)
    report = verify(store.engine, store.keyring)
    checkpoint = make_checkpoint(report, store.display_url)
    assert verify(store.engine, store.keyring, checkpoint=checkpoint).ok
    store.write(batch(["d0", "d1"]))
    assert verify(store.engine, store.keyring, checkpoint=checkpoint).ok  # later writes are fine
    # An attacker who can write the database recomputes the row hash and every link after it:
    # the chain is consistent again, but no longer ends in the checkpoint's link.
    sql(store, "UPDATE tts_events SET latency_ms = 1 WHERE request_id = 'a0'")
    _recompute_everything(store)
    assert problem(store) is None
    found = problem(store, checkpoint=checkpoint)
    assert found is not None and "differs from the checkpoint" in found.message


def test_a_truncated_chain_is_found_with_a_checkpoint(store):
    written(store)
    checkpoint = make_checkpoint(verify(store.engine, store.keyring), store.display_url)
    sql(store, "DELETE FROM tts_events WHERE request_id LIKE 'c%'")
    sql(store, "DELETE FROM voxtrail_chain WHERE seq = 4")
    assert problem(store) is None  # without a checkpoint, a cut tail looks like a shorter history
    assert "the chain ends at link 3" in problem(store, checkpoint=checkpoint).message


def _recompute_everything(store) -> None:
    from voxtrail.store.verify import _Walker  # the attacker's tool: our own hashing

    with store.engine.begin() as conn:
        rows = list(_Walker(conn, store.keyring, None, {}, 1000, 0, None)._stream(0))
        links = [chain.link_from_row(r) for r in conn.execute(sa.text("SELECT * FROM voxtrail_chain ORDER BY seq")).mappings()]
        prev_hash = links[0].link_hash
        for link in links[1:]:
            members = [r for r in rows if link.first_id <= r["id"] <= link.last_id]
            hashes, prev_rid = [], None
            for r in members:
                h = chain.row_hash_of(r["content"], prev_rid)
                conn.execute(sa.text("UPDATE tts_events SET row_hash = :h WHERE id = :i"), {"h": h, "i": r["id"]})
                hashes.append(h)
                prev_rid = r["request_id"]
            d = chain.digest(hashes)
            lh = chain.link_hash(link.seq, link.first_id, link.last_id, link.row_count, d, prev_hash)
            conn.execute(sa.text("UPDATE voxtrail_chain SET digest = :d, prev_hash = :p, link_hash = :h WHERE seq = :s"),
                         {"d": d, "p": prev_hash, "h": lh, "s": link.seq})
            prev_hash = lh


def test_verify_cli_reports_exports_and_exits_3_when_broken(sqlite_url, tmp_path):
    with Store.open(sqlite_url) as s:
        written(s)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "voxtrail", "verify", "--db", sqlite_url, *args],
                              capture_output=True, text=True, timeout=120)

    ok = run()
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: 13 rows in 3 writes verified")
    exported = run("--export")
    checkpoint = json.loads(exported.stdout)
    assert checkpoint["seq"] == 4 and len(checkpoint["checksum"]) == 64
    (tmp_path / "cp.json").write_text(exported.stdout)
    assert run("--checkpoint", str(tmp_path / "cp.json")).returncode == 0
    tampered = {**checkpoint, "seq": 3}
    (tmp_path / "bad.json").write_text(json.dumps(tampered))
    bad = run("--checkpoint", str(tmp_path / "bad.json"))
    assert bad.returncode == 1 and "checksum does not match" in bad.stderr and "Traceback" not in bad.stderr
    with Store.open(sqlite_url) as s:
        sql(s, "UPDATE tts_events SET emotion = 'sad' WHERE request_id = 'b2'")
    broken = run("--json")
    assert broken.returncode == 3
    assert json.loads(broken.stdout)["problem"]["message"].startswith("row id 9 (request_id 'b2')")


@pytest.mark.parametrize("value", ['"just a string"', '"{\\"a\\": 1}"', '"[1, 2]"', '[1, 2]', '"3.5"'])
def test_json_columns_are_hashed_and_read_alike_whatever_the_json(store, value):
    """#3: a JSON column holding a string (even one that looks like an object) neither crashes
    verify nor makes it report a row changed: at write and at verify time the value is the
    same JSON value. (emotion_vector takes any JSON from a batch; attributes refuses non-objects.)"""
    assert store.write(batch(["j0", "j1"], emotion_vector=value)).inserted == 2
    report = verify(store.engine, store.keyring)
    assert report.ok, report.problem
    refused = store.write(batch(["j2"], attributes=value))
    assert refused.inserted == 0 and "attributes: expected a JSON object" in refused.refused[0][1]


def test_json_numbers_every_database_gives_back_differently_verify(store):
    """PostgreSQL gives 1e16 back as 10000000000000000, 1e300 as a 301-digit integer and -0.0 as
    0.0; SQLite and MariaDB give the text back: the row hashes verify on all of them."""
    numbers = ('{"a": 1e16, "b": -0.0, "c": 5e-324, "d": 9223372036854775813, "e": 0.1, "f": 1.5e17, "g": -0, '
               '"h": 1e20, "i": 1e300, "j": -1.2345678901234567e25, "k": 18446744073709551615}')
    vector = "[-0.0, 1e16, 1e-7, 1e300, 0, 0, 0, 0]"
    assert store.write(batch(["n0"], attributes=numbers, emotion_vector=vector)).inserted == 1
    report = verify(store.engine, store.keyring)
    assert report.ok, report.problem


def test_json_changed_to_something_that_is_not_json_is_found(sqlite_url):
    """Only SQLite lets a JSON column hold text that is not JSON: verify reports the row, never crashes."""
    with Store.open(sqlite_url) as store:
        written(store)
        sql(store, "UPDATE tts_events SET attributes = '{not json' WHERE request_id = 'a3'")
        found = problem(store)
    assert found is not None and "'a3'" in found.message and "does not match its hash" in found.message
