"""The store on real SQLite, PostgreSQL and MariaDB: schema, idempotence, atomicity, errors."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from datetime import datetime, timedelta

import polars as pl
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from voxtrail.event import EventBatch, Reject, polars_schema
from voxtrail.store import Checkpoint, Store, StoreError, metadata, normalize_url, tts_events, tts_rejects
from voxtrail.store.migrate import HEAD, head_revision, migrate

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456)
LONG = "长文本" * 25_000  # 75,000 characters: beyond MySQL TEXT's 64 KB


def make_batch(n: int, prefix: str = "r", start: int = 0) -> EventBatch:
    frame = pl.DataFrame(
        {
            "request_id": [f"{prefix}{i:06d}" for i in range(start, start + n)],
            "ts": [T0 + timedelta(microseconds=7 * i) for i in range(start, start + n)],
            "status": ["success" if i % 5 else "failed" for i in range(start, start + n)],
            "emotion": ["愤怒" if i % 2 else "happy" for i in range(start, start + n)],
            "latency_ms": [1234.5678901234 + i for i in range(start, start + n)],
            "text_length": list(range(start, start + n)),
        },
        schema=polars_schema(["request_id", "ts", "status", "emotion", "latency_ms", "text_length"]),
    )
    return EventBatch(frame, constants={"source": "file", "source_format": "text", "source_file": "/var/log/it's.log"})


def checkpoint(offset: int, stream: str = "s1") -> Checkpoint:
    return Checkpoint(stream, 1024, "ab" * 32, "/var/log/tts.log", offset, "cd" * 32, "text", {"line": offset})


def test_migrations_apply_once_and_match_schema(db_url):
    store = Store.open(db_url)
    try:
        with store.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision() == HEAD
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        flat = [d for item in diffs for d in (item if isinstance(item, list) else [item])]
        # Types and defaults are reflected with dialect-specific spellings (DOUBLE vs Float(53)).
        assert [d for d in flat if d[0] not in ("modify_type", "modify_default")] == []
        assert migrate(store.engine, store.dialect) is False  # already at head: nothing to do
    finally:
        store.close()
    with Store.open(db_url) as again:
        assert again.count() == 0


def test_write_and_read_back_with_types(db_url):
    rows = [
        {"request_id": "u-1", "ts": T0, "status": "success", "emotion": "愤怒", "latency_ms": 0.1 + 0.2,
         "text_length": 75_000, "text_input": LONG, "emotion_vector": json.dumps([0.5, 0, 0, 0, 0, 0, 0, 0.5]),
         "attributes": json.dumps({"ts_estimated": True, "说话人": "张三"}), "rtf": 1e-7},
        {"request_id": "u-2", "ts": T0 + timedelta(microseconds=1), "status": "failed",
         "error_message": "CUDA out of memory\n'quoted' \\ back", "latency_ms": None},
    ]
    batch = EventBatch.from_records(rows)
    batch.constants = {"source": "file", "source_format": "jsonl", "source_file": "/logs/a.jsonl"}
    with Store.open(db_url) as store:
        result = store.write(batch)
        assert (result.inserted, result.duplicates, result.rejected) == (2, 0, 0)
        with store.engine.connect() as conn:
            got = conn.execute(sa.select(tts_events).order_by(tts_events.c.request_id)).mappings().all()
    a, b = got
    assert a["ts"] == T0 and b["ts"] == T0 + timedelta(microseconds=1)
    assert a["latency_ms"] == 0.1 + 0.2 and a["rtf"] == 1e-7 and b["latency_ms"] is None
    assert a["text_length"] == 75_000 and a["text_input"] == LONG and a["emotion"] == "愤怒"
    assert a["emotion_vector"] == [0.5, 0, 0, 0, 0, 0, 0, 0.5]
    assert a["attributes"] == {"ts_estimated": True, "说话人": "张三"}
    assert b["error_message"] == "CUDA out of memory\n'quoted' \\ back"
    assert a["source"] == b["source"] == "file" and b["source_file"] == "/logs/a.jsonl"
    assert b["user_id"] is None
    assert abs(a["ingested_at"] - datetime.utcnow()) < timedelta(minutes=5)  # server default, UTC


def test_same_batch_twice_is_counted_as_duplicates(db_url):
    with Store.open(db_url) as store:
        assert store.write(make_batch(500)).inserted == 500
        again = store.write(make_batch(500))
        assert (again.inserted, again.duplicates) == (0, 500)
        overlap = store.write(make_batch(100, start=450))
        assert (overlap.inserted, overlap.duplicates) == (50, 50)
        assert store.count() == 550


def test_rejects_are_stored_once(db_url):
    rejects = [Reject(10, "no timestamp", b"garbage \xff\xfe line"), Reject(99, "bad json", b"{\x00'")]
    batch = EventBatch.empty()
    batch.rejects = rejects
    with Store.open(db_url) as store:
        assert store.write(batch, stream_id="s1", source_file="/l.log").rejected == 2
        store.write(batch, stream_id="s1", source_file="/l.log")
        with store.engine.connect() as conn:
            got = conn.execute(sa.select(tts_rejects).order_by(tts_rejects.c.source_offset)).mappings().all()
    assert [(r["stream_id"], r["source_offset"], r["reason"]) for r in got] == [
        ("s1", 10, "no timestamp"), ("s1", 99, "bad json")]
    assert got[0]["excerpt"] == "garbage \\xff\\xfe line" and got[0]["source_file"] == "/l.log"
    assert got[1]["excerpt"] == "{\\x00'"


def test_checkpoint_upsert_and_read_back(db_url):
    with Store.open(db_url) as store:
        store.write(EventBatch.empty(), checkpoint(100))
        store.write(make_batch(3), checkpoint(200))
        store.write(EventBatch.empty(), checkpoint(5, stream="s2"))
        cps = store.checkpoints()
    assert [(c.stream_id, c.offset, c.state) for c in cps] == [("s1", 200, {"line": 200}), ("s2", 5, {"line": 5})]
    assert cps[0].fp_hash == "ab" * 32 and cps[0].format == "text" and cps[0].updated_at is not None


def test_an_invalid_event_is_a_reject_and_the_rest_of_its_batch_is_stored(db_url):
    """A data error is never a failed write (issue 10): the event is quarantined with its reason.
    (An outage mid-write leaving nothing: tests/test_poison.py.)"""
    batch = make_batch(1000)
    batch.frame = batch.frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 700).then(None).otherwise(pl.col("status")).alias("status"))
    batch.rejects = [Reject(1, "bad", b"x")]
    with Store.open(db_url) as store:
        result = store.write(batch, checkpoint(999))
        assert (result.inserted, result.duplicates, result.rejected) == (999, 0, 2)
        assert result.refused == [("r000700", "event: missing status")]
        assert store.count() == 999 and store.checkpoints()[0].offset == 999
        with store.engine.connect() as conn:
            reasons = conn.execute(sa.select(tts_rejects.c.reason).order_by(tts_rejects.c.reason)).scalars().all()
        assert reasons == ["bad", "event: missing status"]


def test_concurrent_writers_skip_duplicates(db_url):
    stores = [Store.open(db_url) for _ in range(2)]
    results, errors = [], []

    def run(store):
        try:
            for k in range(4):  # overlapping batches, in different orders per writer
                results.append(store.write(make_batch(2000, start=(k * 1000) % 4000)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert sum(r.inserted for r in results) == stores[0].count() == 5000
        assert all(r.inserted + r.duplicates == 2000 for r in results)
    finally:
        for s in stores:
            s.close()


def test_invalid_batches_are_refused_before_the_database(sqlite_url):
    """Columns that are not event fields are a programming error; a value too long for its column
    on PostgreSQL and MySQL is refused on SQLite too, as a reject of that event alone."""
    with Store.open(sqlite_url) as store:
        with pytest.raises(ValueError, match="unknown event field"):
            store.write(EventBatch(pl.DataFrame({"request_id": ["a"], "bogus": [1]})))
        batch = make_batch(2)
        batch.frame = batch.frame.with_columns(pl.Series("emotion", ["x" * 65, "ok"]))
        result = store.write(batch)
        assert (result.inserted, result.rejected) == (1, 1)
        assert result.refused == [("r000000", "event: emotion longer than 64 characters")]
        assert store.count() == 1


@pytest.mark.parametrize("url", [
    "postgresql://vx:s3cret@127.0.0.1:1/db",
    "mysql://vx:s3cret@127.0.0.1:1/db",
])
def test_unreachable_server_is_one_clear_line(url):
    with pytest.raises(StoreError) as err:
        Store.open(url)
    msg = str(err.value)
    assert "\n" not in msg and "s3cret" not in msg and "127.0.0.1:1" in msg and "check that the server" in msg


@pytest.mark.parametrize("url, words", [
    ("oracle://u:s3cret@host/db", "unsupported database 'oracle'"),
    ("not a url", "invalid database URL"),
    ("sqlite:////nonexistent-dir/sub/x.db", "does not exist"),
])
def test_bad_urls_are_one_clear_line(url, words):
    with pytest.raises(StoreError) as err:
        Store.open(url)
    assert words in str(err.value) and "\n" not in str(err.value) and "s3cret" not in str(err.value)


def test_url_normalisation():
    assert normalize_url("postgres://u@h/d")[0].drivername == "postgresql+psycopg"
    u, dialect = normalize_url("mariadb://u@h/d")
    assert (u.drivername, dialect, u.query["charset"]) == ("mysql+pymysql", "mysql", "utf8mb4")
    assert normalize_url(None)[0].render_as_string() == "sqlite+pysqlite:///voxtrail.db"


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "vx.db"
    with Store.open(f"sqlite:///{path}") as store:
        store.write(make_batch(3))
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_nan_and_infinity_do_not_break_a_batch(db_url):
    """Stored as NULL on every database (MySQL has neither), and -0.0 as 0.0 (SQLite and MySQL drop
    the sign): the same row everywhere, whose hash verifies."""
    from voxtrail.store.verify import verify

    batch = make_batch(4)
    batch.frame = batch.frame.with_columns(pl.Series("rtf", [math.nan, math.inf, 0.5, -0.0]),
                                           pl.Series("latency_ms", [-math.inf, 1.0, -0.0, 2.0]))
    with Store.open(db_url) as store:
        assert store.write(batch).inserted == 4
        with store.engine.connect() as conn:
            got = conn.execute(sa.select(tts_events.c.rtf, tts_events.c.latency_ms)
                               .order_by(tts_events.c.request_id)).all()
        assert [tuple(r) for r in got] == [(None, None), (None, 1.0), (0.5, 0.0), (0.0, 2.0)]
        assert all(math.copysign(1, v) == 1 for r in got for v in r if v is not None)
        assert verify(store.engine, store.keyring).ok
