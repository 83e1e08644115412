"""SQLite's scratch-file bulk path: slot ownership, cleanup, and the pool's connections."""

from __future__ import annotations

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
        assert [f for f in os.listdir(_scratch_dir(store)) if f.endswith(".db")] == ["slot1.db"]
        assert store.count() == 1000


def test_scratch_dir_is_private_and_removed_at_close(sqlite_url):
    store = Store.open(sqlite_url)
    store.write(make_batch(10))
    directory = _scratch_dir(store)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    store.close()
    assert not os.path.exists(directory)


def test_no_attachment_outlives_a_write_even_a_failed_one(sqlite_url):
    bad = make_batch(100)
    bad.frame = bad.frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 50).then(None).otherwise(pl.col("status")).alias("status"))
    with Store.open(sqlite_url) as store:
        store.write(make_batch(100), checkpoint(1))
        assert _attached(store) == ["main"]
        with pytest.raises(StoreError, match="NOT NULL"):
            store.write(bad, checkpoint(2))
        assert _attached(store) == ["main"]
        assert store.write(make_batch(100, prefix="z"), checkpoint(3)).inserted == 100
        assert store.count() == 200 and store.checkpoints()[0].offset == 3


def test_values_that_cannot_be_literals_are_bound_per_row(sqlite_url):
    batch = make_batch(3)
    batch.frame = batch.frame.with_columns(pl.Series("rtf", [math.nan, math.inf, 0.5]),
                                           pl.Series("text_input", ["a\x00b", "it's", None]))
    batch.constants["error_message"] = "nul\x00inside"
    with Store.open(sqlite_url) as store:
        assert store.write(batch).inserted == 3
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT rtf, text_input, error_message, typeof(text_length), typeof(ts) FROM tts_events ORDER BY id")).all()
    assert [r[0] for r in rows] == [None, math.inf, 0.5]
    assert [r[1] for r in rows] == ["a\x00b", "it's", None]
    assert {r[2] for r in rows} == {"nul\x00inside"}
    assert {(r[3], r[4]) for r in rows} == {("integer", "text")}


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
