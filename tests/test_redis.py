"""Recorders -> Redis stream -> collectors -> store, with the real Redis server of the machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from helpers_recorder import lock_events_table, request_ids, rows, wait_until
from voxtrail import Recorder
from voxtrail.store import Store

REDIS_URL = os.environ.get("VOXTRAIL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis unreachable at {REDIS_URL}: {exc} (CI is set: must not skip)")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture
def stream(redis_client):
    name = f"voxtrail-test:{uuid.uuid4().hex[:10]}"
    yield name
    redis_client.delete(name)


def collect(stream, db_url, consumer, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "voxtrail", "collect", "--redis", REDIS_URL, "--stream", stream, "--group", "g",
         "--consumer", consumer, "--db", db_url, "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def pending_of(client, stream, consumer) -> int:
    import redis

    try:
        summary = client.xpending(stream, "g")
    except redis.exceptions.ResponseError:  # the collector has not created the group yet
        return 0
    for c in summary.get("consumers") or []:
        name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
        if name == consumer:
            return int(c["pending"])
    return 0


@pytest.mark.slow
def test_two_collectors_one_killed_mid_batch(db_url, redis_client, stream, tmp_path):
    total = 6000
    Store.open(db_url).close()
    rec = Recorder(redis=REDIS_URL, stream=stream, spool_dir=tmp_path / "spool", batch_size=500)
    ids = [rec.record(text_input=f"event {i}", latency_ms=float(i), node=f"node-{i % 3}") for i in range(total)]
    assert rec.flush(30)
    rec.close()
    assert redis_client.xlen(stream) == total // 100  # 100 events per entry

    victim = collect(stream, db_url, "a", "--batch-size", "2", "--claim-idle", "1")
    release = None
    try:
        assert wait_until(lambda: rows(db_url) > 0, 60), "the first collector stores some batches"
        release = lock_events_table(db_url)  # its next write now hangs, with its entries read, not acked
        assert wait_until(lambda: pending_of(redis_client, stream, "a") > 0, 60)
        time.sleep(0.2)  # well inside the write
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
        if release is not None:
            release()
    left_pending = pending_of(redis_client, stream, "a")
    stored_before = rows(db_url)
    assert left_pending > 0, "killed holding read but unacknowledged entries"
    assert 0 < stored_before < total

    survivor = collect(stream, db_url, "b", "--batch-size", "5", "--claim-idle", "1", "--drain")
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    stats = json.loads(out)
    assert stats["claimed"] >= left_pending

    stored = request_ids(db_url)
    assert len(stored) == total and sorted(stored) == sorted(ids), "every event stored exactly once"
    assert redis_client.xpending(stream, "g")["pending"] == 0
    assert redis_client.xlen(stream) == 0, "acknowledged entries are deleted"


def test_collector_sigterm_stops_cleanly_and_bad_entries_are_rejects(sqlite_url, redis_client, stream):
    redis_client.xadd(stream, {"events": b'{"request_id": "ok-1", "ts": "2025-03-01T10:00:00Z", "status": "success"}\n'
                                         b'not json\n'
                                         b'{"request_id": "bad-status", "ts": "2025-03-01T10:00:00Z", "status": "ok"}'})
    redis_client.xadd(stream, {"something": "else"})
    proc = collect(stream, sqlite_url, "c")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and redis_client.xlen(stream) > 0:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["inserted"] == 1 and stats["rejected"] == 3
    assert request_ids(sqlite_url) == ["ok-1"]
    reasons = sorted(r[0] for r in rows(sqlite_url, "SELECT reason FROM tts_rejects"))
    assert any("invalid JSON" in r for r in reasons) and any("status" in r for r in reasons)
    assert any("no 'events' field" in r for r in reasons)


def test_collect_errors_are_one_line(sqlite_url, tmp_path):
    bad_redis = subprocess.run([sys.executable, "-m", "voxtrail", "collect", "--redis", "redis://127.0.0.1:1/0",
                                "--db", sqlite_url], capture_output=True, text=True, timeout=60)
    assert bad_redis.returncode == 1
    assert bad_redis.stderr.startswith("voxtrail: error: cannot reach Redis") and bad_redis.stderr.count("\n") == 1
    bad_db = subprocess.run([sys.executable, "-m", "voxtrail", "collect", "--redis", REDIS_URL,
                             "--db", "postgresql://nobody@127.0.0.1:1/x"], capture_output=True, text=True, timeout=60)
    assert bad_db.returncode == 1
    assert bad_db.stderr.startswith("voxtrail: error: cannot connect") and bad_db.stderr.count("\n") == 1


def test_collector_survives_the_stream_being_deleted(sqlite_url, redis_client, stream):
    def event(rid: str) -> dict:
        return {"events": f'{{"request_id": "{rid}", "ts": "2025-03-01T10:00:00Z", "status": "success"}}'}

    redis_client.xadd(stream, event("before"))
    proc = collect(stream, sqlite_url, "d")
    try:
        assert wait_until(lambda: redis_client.xlen(stream) == 0)
        redis_client.delete(stream)  # the group goes with it
        redis_client.xadd(stream, event("after"))
        assert wait_until(lambda: redis_client.xlen(stream) == 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert sorted(request_ids(sqlite_url)) == ["after", "before"]
