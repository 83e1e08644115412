"""Follow mode: lines reach the database within 2 s, through rotation, and stop is clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import sqlalchemy as sa

from logdata import text_lines
from voxtrail.store import Store


def wait_for_count(engine, n, timeout=10.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT COUNT(*) FROM tts_events")).scalar_one() >= n:
                return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} events after {timeout} s")


def append(path, lines):
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()


def test_tail_follows_appends_and_rotation(db_url, tmp_path):
    store = Store.open(db_url)
    log = tmp_path / "tts.log"
    exp = text_lines(60, seed=50)
    append(log, exp.lines[:10])
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxtrail", "tail", str(tmp_path / "tts.log*"), "--db", db_url, "--tz", "UTC", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_count(store.engine, 10, timeout=30)  # start-up included
        delays = []
        for i in range(10, 40, 5):
            append(log, exp.lines[i : i + 5])
            delays.append(wait_for_count(store.engine, i + 5))
        os.rename(log, tmp_path / "tts.log.1")  # rotation by rename, then a new file
        append(tmp_path / "tts.log.1", exp.lines[40:45])  # a late write to the old file
        append(log, exp.lines[45:60])
        delays.append(wait_for_count(store.engine, 60))
        assert max(delays) < 2.0, delays
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with store.engine.connect() as conn:
        total, distinct = conn.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM tts_events")).one()
    store.close()
    assert (total, distinct) == (60, 60)
    assert "Traceback" not in err


def test_follow_waits_out_a_database_outage(sqlite_url, tmp_path):
    """Writes failing for a while (server down) delay the import; nothing is lost or doubled."""
    import threading

    from voxtrail.sources.files.follow import follow
    from voxtrail.sources.files.importer import Importer
    from voxtrail.store import StoreError

    class FlakyStore(Store):
        failures_left = 3

        def write(self, *args, **kwargs):
            if FlakyStore.failures_left:
                FlakyStore.failures_left -= 1
                raise StoreError("writing to the database failed: server closed the connection")
            return super().write(*args, **kwargs)

    store = FlakyStore.open(sqlite_url)
    log = tmp_path / "tts.log"
    exp = text_lines(40, seed=55)
    append(log, exp.lines[:20])
    stop, errors = threading.Event(), []
    worker = threading.Thread(target=follow, args=(Importer(store, tz="UTC"), [str(log)]),
                              kwargs={"stop": stop, "poll_interval": 0.05, "on_error": errors.append})
    worker.start()
    try:
        wait_for_count(store.engine, 20, timeout=20)
        append(log, exp.lines[20:])
        wait_for_count(store.engine, 40, timeout=20)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert len(errors) == 3
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(DISTINCT request_id), COUNT(*) FROM tts_events")).one() == (40, 40)
    store.close()


def test_tail_goes_on_after_a_line_that_is_not_json(sqlite_url, tmp_path):
    """#6: one non-JSON line appended to a tailed audit log killed `voxtrail tail` (polars found no
    'status' column in a chunk without a good line). It is a reject now, and the lines after it flow."""
    import json

    store = Store.open(sqlite_url)
    log = tmp_path / "audit.log"

    def record(i):
        fields = {"request_id": f"r{i}", "status": "success", "created_at": f"2025-03-01 00:00:{i:02d}"}
        return json.dumps(fields) + "\n"

    append(log, [record(0)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxtrail", "tail", str(log), "--db", sqlite_url, "--tz", "UTC", "--format", "audit"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_count(store.engine, 1, timeout=30)
        append(log, ["this is not json\n"])
        time.sleep(1.5)  # a pass of its own: the chunk holds only the bad line
        append(log, ["\n", '{"created_at": "0001-01-01T00:00:00+01:00", "request_id": "y0", "status": "success"}\n'])
        time.sleep(1.5)
        append(log, [record(i) for i in range(1, 6)])
        wait_for_count(store.engine, 6)
        assert proc.poll() is None, proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with store.engine.connect() as conn:
        reasons = [r[0] for r in conn.execute(sa.text("SELECT reason FROM tts_rejects ORDER BY source_offset"))]
    store.close()
    assert len(reasons) == 2 and reasons[0].startswith("audit: invalid JSON") and "years 1000 to 9999" in reasons[1]
