"""SQLite's scratch-file bulk path: slot ownership, cleanup, and the pool's connections."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import stat
import threading
from datetime import datetime

import polars as pl
import pytest
import sqlalchemy as sa

from test_store import checkpoint, make_batch
from voxtrail.event import polars_schema
from voxtrail.event import EventBatch
from voxtrail.store import Store, StoreError


def _scratch_dir(store: Store) -> str | None:
    return store._writer._dir


def _attached(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [row[1] for row in conn.exec_driver_sql("PRAGMA database_list") if row[1] != "temp"]


def test_outstanding_encoded_batches_keep_their_rows_in_any_write_order(sqlite_url):
    with Store.open(sqlite_url) as store:
        encoded = [store.encode(make_batch(500, prefix=f"b{k}-")) for k in range(5)]
        for e in reversed(encoded):
            assert store.write(e).inserted == 500
        again = store.write(encoded[2])  # the same delivery twice: all duplicates
        assert (again.inserted, again.duplicates) == (0, 500)
        with store.engine.connect() as conn:
            ids = conn.exec_driver_sql("SELECT request_id FROM tts_events WHERE request_id LIKE 'b3-%' ORDER BY id")
            assert [r[0] for r in ids] == [f"b3-{i:06d}" for i in range(500)]
        assert store.count() == 2500


def test_slots_are_reused_once_their_batch_is_dropped(sqlite_url):
    with Store.open(sqlite_url) as store:
        for k in range(10):
            store.write(make_batch(100, prefix=f"p{k}-"))
        gc.collect()
        assert store._writer._made == 1  # one slot, reused by every batch...
        assert [f for f in os.listdir(_scratch_dir(store)) if f.endswith(".db")] == []  # ...its file gone once written
        assert store.count() == 1000


def test_scratch_dir_is_private_and_removed_at_close(sqlite_url):
    store = Store.open(sqlite_url)
    store.write(make_batch(10))
    directory = _scratch_dir(store)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    store.close()
    assert not os.path.exists(directory)


def test_no_attachment_outlives_a_write_even_a_failed_one(sqlite_url):
    """Neither a failed write (an outage) nor a write the database refused parts of (split into
    several transactions) leaves the slot attached."""
    from helpers_recorder import refuse_in_database

    with Store.open(sqlite_url) as store:
        store.write(make_batch(100, prefix="a"), checkpoint(1))
        assert _attached(store) == ["main"]
        refuse_in_database(sqlite_url, ["r000050"], outage=True)  # SQLite then fails every insert
        with pytest.raises(StoreError, match="no such function"):
            store.write(make_batch(100), checkpoint(2))
        assert _attached(store) == ["main"] and store.checkpoints()[0].offset == 1
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER vx_refuse")
        refuse_in_database(sqlite_url, ["r000050"])
        result = store.write(make_batch(100), checkpoint(3))
        assert (result.inserted, result.rejected) == (99, 1)
        assert _attached(store) == ["main"]
        assert store.write(make_batch(100, prefix="z"), checkpoint(4)).inserted == 100
        assert store.count() == 299 and store.checkpoints()[0].offset == 4


def test_values_that_cannot_be_literals_are_bound_per_row(sqlite_url):
    """The writer's own contract, under what the store's checks guarantee: a constant that cannot
    be an SQL literal (a NUL, which sqlite3 refuses in SQL text; a float that is not finite)
    goes through the slot as a column."""
    from voxtrail.store.bulk import PreparedBatch, outside_transaction

    frame = make_batch(3).frame.with_columns(pl.Series("rtf", [math.nan, math.inf, 0.5]),
                                             pl.Series("text_input", ["a\x00b", "it's", None]))
    prepared = PreparedBatch(frame, {"source": "file", "error_message": "nul\x00inside", "emo_alpha": math.inf})
    with Store.open(sqlite_url) as store:
        writer = store._writer
        payload = writer.encode(prepared)
        with (store.engine.connect().execution_options(vx_immediate=True) as conn,
              outside_transaction(writer, conn, payload), conn.begin()):
            assert writer.insert_events(conn, payload) == 3
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT rtf, text_input, error_message, emo_alpha, typeof(text_length), "
                                        "typeof(ts) FROM tts_events ORDER BY id")).all()
    assert [r[0] for r in rows] == [None, math.inf, 0.5]
    assert [r[1] for r in rows] == ["a\x00b", "it's", None]
    assert {(r[2], r[3]) for r in rows} == {("nul\x00inside", math.inf)}
    assert {(r[4], r[5]) for r in rows} == {("integer", "text")}


def test_encoding_while_another_thread_writes(sqlite_url):
    """The importer's overlap: encode batch k+1 while batch k is being written."""
    with Store.open(sqlite_url) as store:
        pending = store.encode(make_batch(3000, prefix="t0-"))
        for k in range(1, 6):
            writer = threading.Thread(target=store.write, args=(pending,))
            writer.start()
            nxt = store.encode(make_batch(3000, prefix=f"t{k}-"))
            writer.join()
            pending = nxt
        store.write(pending)
        assert store.count() == 18000


def test_an_empty_batch_writes_no_scratch(sqlite_url):
    with Store.open(sqlite_url) as store:
        assert store.write(EventBatch.empty(), checkpoint(5)).inserted == 0
        assert _scratch_dir(store) is None
        assert store.checkpoints()[0].offset == 5


def test_scratch_of_a_killed_process_is_swept(tmp_path):
    """A process killed mid-import leaves its scratch directory; the next writer removes it."""
    import subprocess
    import sys
    import tempfile

    code = (
        "import os, signal\n"
        "from voxtrail.event import EventBatch\n"
        "from voxtrail.store import Store\n"
        f"s = Store.open('sqlite:///{tmp_path}/a.db')\n"
        "e = s.encode(EventBatch.from_records([{'request_id': 'x', 'ts': __import__('datetime').datetime(2025, 1, 1),"
        " 'status': 'success', 'source': 'file'}]))\n"
        "print(s._writer._dir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    left = proc.stdout.strip()
    assert left.startswith(tempfile.gettempdir()) and os.path.isdir(left)
    with Store.open(f"sqlite:///{tmp_path}/b.db") as store:
        mine = store.encode(EventBatch.from_records([{"request_id": "y", "ts": datetime(2025, 1, 1),
                                                      "status": "success", "source": "file"}]))
        assert not os.path.exists(left)
        assert os.path.isdir(store._writer._dir)  # a live writer's own directory stays
        del mine


# --- the slot is filled by ADBC's SQLite driver from the frame's Arrow stream ---------------

_ROUND_TRIP_COLUMNS = ["request_id", "ts", "status", "emotion", "latency_ms", "text_length", "text_input",
                       "emotion_vector", "attributes", "rtf", "user_id", "error_message", "emo_alpha", "ingested_at"]


def _tricky_batch() -> EventBatch:
    long_text = ("长文本" + "x'\"\x00" * 10) * 3000  # over 100 KB, NULs and quotes throughout
    texts = ["a\x00b", "it's \"quoted\"", "中文，愤怒", None, long_text, "", "\u2028line\nbreak\ttab", "\x00"]
    n = len(texts)
    frame = pl.DataFrame(
        {
            "request_id": [f"rt-{i}" for i in range(n)],
            "ts": [datetime(2025, 3, 1, 12, 0, 0, 123456), datetime(1970, 1, 1), datetime(2025, 12, 31, 23, 59, 59, 999999),
                   datetime(2000, 2, 29, 0, 0, 0, 1), datetime(2025, 3, 1), datetime(2025, 3, 1, 0, 0, 1),
                   datetime(9999, 12, 31), datetime(1900, 1, 1)],
            "status": ["success", "failed"] * (n // 2),
            "emotion": ["愤怒", None, "happy", "温柔", "it's", "", "a\x00b", "x"],
            "latency_ms": [math.nan, math.inf, -math.inf, None, 0.1, -0.0, 1e-300, 1.7976931348623157e308],
            "text_length": [None, 2**62, -1, 0, 7, 2**63 - 1, -(2**63), 42],
            "text_input": texts,
            "emotion_vector": ["[0.1, 0.2, 0, 0, 0, 0, 0, 0.7]", None, "[]", '{"a": "中"}', "[1e308]", "null", "1", "\"s\""],
            "attributes": ['{"ts_estimated": true}', None, '{"k": "it\'s"}', "{}", '{"n": null}', '{"x": "\\u0000"}', "{}", None],
        },
        schema=polars_schema(["request_id", "ts", "status", "emotion", "latency_ms", "text_length", "text_input",
                              "emotion_vector", "attributes"]),
    )
    # Constants that cannot be SQL literals go through the slot as columns too.
    constants = {"source": "file", "rtf": math.nan, "user_id": "u\x00ser", "error_message": "中'\x00",
                 "emo_alpha": math.inf}
    return EventBatch(frame, constants=constants)


def _stored(conn, table: str) -> list[tuple]:
    cols = ", ".join(f'"{c}", typeof("{c}")' for c in _ROUND_TRIP_COLUMNS if c != "ingested_at")
    return conn.exec_driver_sql(f"SELECT {cols} FROM {table} ORDER BY request_id").all()


def test_values_arrive_as_a_per_row_insert_would_store_them(sqlite_url):
    """Reference: the same rows, as the store's checks leave them, bound one by one by the stdlib
    into a copy of the table."""
    from voxtrail.store.bulk import prepare

    batch = _tricky_batch()
    prepared, refused = prepare(batch)
    assert [rid for _, rid in refused] == ["rt-7"]  # latency_ms 1.8e308: more than the rollups can add up
    with Store.open(sqlite_url) as store:
        assert store.write(batch).inserted == prepared.size
        with store.engine.connect() as conn:
            ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'tts_events'").scalar()
            conn.exec_driver_sql(ddl.replace("tts_events", "ref", 1))
            frame = prepared.frame.with_columns(
                pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S.%6f"),
                *(pl.lit(v).alias(k) for k, v in prepared.constants.items()),
                pl.lit("2025-01-01 00:00:00.000000").alias("ingested_at"),
            ).select(_ROUND_TRIP_COLUMNS + ["source"])
            names = ", ".join(f'"{c}"' for c in frame.columns)
            raw = conn.connection.driver_connection
            raw.executemany(f"INSERT INTO ref ({names}) VALUES ({', '.join('?' * frame.width)})", frame.rows())
            stored, ref = _stored(conn, "tts_events"), _stored(conn, "ref")
    assert len(stored) == prepared.size
    for got, want in zip(stored, ref):
        assert got == want  # value and storage class, column by column
    by_id = {r[0]: r for r in stored}
    assert by_id["rt-0"][2:4] == ("2025-03-01 12:00:00.123456", "text")
    # Not finite: NULL on every database (MySQL has neither NaN nor infinity); -0.0 is 0.0.
    assert by_id["rt-0"][8] is None and by_id["rt-1"][8] is None and by_id["rt-2"][8] is None
    assert by_id["rt-5"][8:10] == (0.0, "real") and by_id["rt-6"][8] == 1e-300
    assert by_id["rt-1"][10:12] == (2**62, "integer") and by_id["rt-5"][10] == 2**63 - 1
    # NUL is U+FFFD on every database (PostgreSQL cannot store it).
    assert by_id["rt-0"][12:14] == ("a\ufffdb", "text") and by_id["rt-3"][12:14] == (None, "null")
    long_text = batch.frame["text_input"][4]
    assert len(by_id["rt-4"][12]) > 100_000 and by_id["rt-4"][12] == long_text.replace("\x00", "\ufffd")
    assert {r[20] for r in stored} == {"u\ufffdser"} and {r[22] for r in stored} == {"中'\ufffd"}
    assert {r[18] for r in stored} == {None} and {r[24] for r in stored} == {None}


def _open_slot_files(directory: str) -> list[str]:
    """Slot files this process holds a descriptor on (either SQLite library's)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(directory) and ".db" in target:
                held.append(target)
    return held


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_adbc_opens_only_fresh_slot_files_and_closes_them_before_encode_returns(sqlite_url, monkeypatch):
    from voxtrail.store import bulk_sqlite

    driver, manager = bulk_sqlite._adbc_modules()
    opened: list[str] = []

    class Recording:
        @staticmethod
        def connect(path):
            assert not os.path.exists(path)  # a new file: no stdlib connection can hold it
            opened.append(path)
            return driver.connect(path)

    monkeypatch.setattr(bulk_sqlite, "_adbc", (Recording, manager))
    with Store.open(sqlite_url) as store:
        db_path = store.engine.url.database
        pending = []
        for k in range(4):
            pending.append(store.encode(make_batch(50, prefix=f"a{k}-")))
            scratch = _scratch_dir(store)
            assert _open_slot_files(scratch) == []  # ADBC closed the file before handing it over
            if k % 2:
                for encoded in pending:
                    assert store.write(encoded).inserted == 50
                    assert _open_slot_files(scratch) == []  # DETACHed after the write
                del encoded
                pending.clear()
                gc.collect()
        assert store.count() == 200
    assert len(opened) == 4 and all(os.path.dirname(p) == scratch for p in opened)
    assert len(set(opened)) == 2  # slots were reused once their payloads were gone
    assert os.path.realpath(db_path) not in {os.path.realpath(p) for p in opened}


def test_a_failed_fill_removes_its_slot_and_the_store_goes_on(sqlite_url, monkeypatch):
    from voxtrail.store import bulk_sqlite

    with Store.open(sqlite_url) as store:
        store.write(make_batch(10))
        real = bulk_sqlite._Slot.fill

        def failing(self, frame, extra=None):
            real(self, frame, extra)
            raise RuntimeError("boom")

        monkeypatch.setattr(bulk_sqlite._Slot, "fill", failing)
        with pytest.raises(RuntimeError, match="boom"):
            store.encode(make_batch(10, prefix="f"))
        monkeypatch.setattr(bulk_sqlite._Slot, "fill", real)
        gc.collect()
        assert store.write(make_batch(10, prefix="g")).inserted == 10
        assert store.count() == 20


def test_cli_start_up_does_not_load_adbc_or_pyarrow():
    import subprocess
    import sys

    code = ("import sys, voxtrail.cli\n"
            "print(sorted(m for m in sys.modules if m.startswith(('adbc_driver', 'pyarrow'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_no_scratch_space_is_a_store_error(sqlite_url, monkeypatch):
    """A full or unwritable temporary directory ends the import with one clear line."""
    import errno
    import tempfile

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/.voxtrail-new-x")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with Store.open(sqlite_url) as store:
        with pytest.raises(StoreError, match="No space left on device.*TMPDIR"):
            store.encode(make_batch(3))
