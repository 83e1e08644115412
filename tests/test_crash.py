"""SIGKILL at any moment, then run again: exactly the file's events, none lost, none twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import sqlalchemy as sa

from logdata import text_lines, write
from voxtrail.store import Store

LINES = 30000


def count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT COUNT(*) FROM tts_events")).scalar_one()


def start_import(log, db_url):
    return subprocess.Popen(
        [sys.executable, "-m", "voxtrail", "import", str(log), "--db", db_url, "--tz", "UTC",
         "--no-progress", "--json", "--chunk-bytes", "8192"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_sigkill_at_random_points_then_rerun_gives_exact_counts(db_url, tmp_path):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    exp = text_lines(LINES, seed=41)
    log = tmp_path / "tts.log"
    write(log, exp)
    store = Store.open(db_url)  # creates the schema, so progress can be watched
    engine = store.engine
    partial_kills = 0
    try:
        for target in sorted(rng.sample(range(1, LINES), 4)):
            proc = start_import(log, db_url)
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if count(engine) >= target:
                    time.sleep(rng.random() * 0.05)  # land anywhere, mid-batch included
                    break
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            seen = count(engine)
            partial_kills += 0 < seen < LINES
        assert partial_kills >= 2, "the kills should have hit imports in progress"
        final = subprocess.run(
            [sys.executable, "-m", "voxtrail", "import", str(log), "--db", db_url, "--tz", "UTC", "--json"],
            capture_output=True, text=True, timeout=300,
        )
        assert final.returncode == 0, final.stderr
        with engine.connect() as conn:
            total, distinct, latency = conn.execute(sa.text(
                "SELECT COUNT(*), COUNT(DISTINCT request_id), SUM(latency_ms) FROM tts_events")).one()
        assert (total, distinct) == (LINES, LINES)
        assert round(float(latency), 3) == round(exp.latency_ms, 3)
    finally:
        store.close()
