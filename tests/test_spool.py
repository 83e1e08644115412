"""The spool on its own: framing, torn tails, permissions, the bound, adoption of orphans."""

from __future__ import annotations

import logging
import os
import stat

import orjson
import pytest

from helpers_recorder import dead_port, request_ids, rows, wait_until
from voxtrail import Recorder
from voxtrail.recorder.spool import FRAME, SpoolWriter, SubSpool, read_frames, segment_name


def down_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{dead_port()}/nothing"


def test_frames_round_trip_and_segments_rotate(tmp_path):
    sub = SubSpool.create(tmp_path)
    writer = SpoolWriter(sub, fsync="never", segment_bytes=200, max_bytes=1 << 20)
    payloads = [f'{{"i":{i}}}'.encode() for i in range(50)]
    for p in payloads:
        writer.append(p)
    segments = sorted(p.name for p in sub.path.glob("*.seg"))
    assert len(segments) > 1
    got = []
    for name in segments:
        got += read_frames(sub.path / name, 0, None, 10_000).payloads
    assert got == payloads
    writer.close()


def test_torn_tail_is_ignored_and_counted(tmp_path, sqlite_url):
    spool = tmp_path / "spool"
    rec = Recorder(db=down_url(), spool_dir=spool, max_backoff=0.2)
    ids = [rec.record(text_input=f"t{i}") for i in range(100)]
    assert not rec.close(timeout=0.2)
    (sub,) = [p for p in spool.iterdir() if p.name.startswith("w-")]
    seg = sub / segment_name(1)
    torn = FRAME.pack(500, 123) + b'{"request_id": "torn"'
    with open(seg, "ab") as f:  # a crash in the middle of a write: a header promising more than is there
        f.write(torn)
    # The destination marker names the old destination: make the spool belong to the real one.
    (spool / "destination").unlink()
    rec2 = Recorder(db=sqlite_url, spool_dir=spool)
    assert rec2.flush(30)
    deadline_ok = _wait(lambda: not sub.exists())
    assert deadline_ok, "the adopted sub-spool is removed once drained"
    assert rec2.stats()["torn_bytes"] == len(torn)
    rec2.close()
    assert sorted(request_ids(sqlite_url)) == sorted(ids)


def test_corrupt_crc_stops_reading(tmp_path):
    sub = SubSpool.create(tmp_path)
    writer = SpoolWriter(sub, fsync="never", segment_bytes=1 << 20, max_bytes=1 << 20)
    for i in range(3):
        writer.append(f'{{"i":{i}}}'.encode())
    writer.close()
    path = sub.path / segment_name(1)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF  # flip a byte of the last payload
    path.write_bytes(bytes(data))
    chunk = read_frames(path, 0, None, 100)
    assert [p for p in chunk.payloads] == [b'{"i":0}', b'{"i":1}']
    assert chunk.torn == FRAME.size + len(b'{"i":2}')


def test_files_are_private(tmp_path):
    spool = tmp_path / "spool"
    rec = Recorder(db=down_url(), spool_dir=spool, max_backoff=0.2)
    rec.record(text_input="secret text")
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    (sub,) = [p for p in spool.iterdir() if p.name.startswith("w-")]
    assert stat.S_IMODE(sub.stat().st_mode) == 0o700
    for f in sub.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    rec.close(timeout=0)


def test_bound_drops_counts_and_warns(tmp_path, caplog):
    rec = Recorder(db=down_url(), spool_dir=tmp_path / "spool", max_spool_bytes=20_000, max_backoff=0.2)
    with caplog.at_level(logging.WARNING, logger="voxtrail.recorder"):
        for i in range(1000):
            rec.record(text_input="x" * 50)
    stats = rec.stats()
    assert stats["dropped"] > 0
    assert stats["recorded"] + stats["dropped"] == 1000
    assert stats["spooled_bytes"] <= 20_000
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert 1 <= len(full) <= 2, "warned, and rate-limited"
    rec.close(timeout=0)


def test_spool_directory_serves_one_destination(tmp_path, sqlite_url):
    Recorder(db=sqlite_url, spool_dir=tmp_path / "s").close()
    with pytest.raises(ValueError, match="belongs to"):
        Recorder(db=down_url(), spool_dir=tmp_path / "s")


def test_unfinished_spool_is_delivered_by_the_next_recorder(tmp_path, sqlite_url):
    spool = tmp_path / "spool"
    first = Recorder(db=sqlite_url, spool_dir=spool)
    lock = _hold_sqlite_write_lock(sqlite_url)  # the store cannot take writes
    ids = [first.record(text_input=str(i)) for i in range(500)]
    assert not first.close(timeout=0.3)
    lock.rollback()
    lock.close()
    second = Recorder(db=sqlite_url, spool_dir=spool)
    assert _wait(lambda: len([p for p in spool.iterdir() if p.name.startswith("w-")]) == 1)
    assert second.stats()["adopted"] == 1
    second.close()
    stored = request_ids(sqlite_url)
    assert sorted(stored) == sorted(ids)
    assert rows(sqlite_url) == 500


def _hold_sqlite_write_lock(url: str):
    import sqlite3

    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=1)
    conn.execute("BEGIN IMMEDIATE")
    return conn


_wait = wait_until


def test_permissions_of_existing_spool_are_tightened(tmp_path, sqlite_url):
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)
    os.chmod(spool, 0o755)
    Recorder(db=sqlite_url, spool_dir=spool).close()
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700


def test_failures_mid_stream_rewind_without_loss_or_duplicates(tmp_path, sqlite_url):
    """Every third delivery fails while the next batch is already prepared and segments rotate
    under the reader: reading rewinds to the acknowledged position, and all events arrive once."""
    from voxtrail.recorder.transports import Retry

    spool = tmp_path / "spool"
    rec = Recorder(db=sqlite_url, spool_dir=spool, batch_size=70, segment_bytes=4096, max_backoff=0.01)
    transport = rec._shipper.transport
    real_deliver = transport.deliver
    calls = {"n": 0}

    def flaky(prepared):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise Retry("injected failure")
        return real_deliver(prepared)

    transport.deliver = flaky
    ids = [rec.record(text_input=f"t{i}") for i in range(1500)]
    assert rec.flush(120)
    stats = rec.stats()
    rec.close()
    assert stats["retries"] > 5
    assert sorted(request_ids(sqlite_url)) == sorted(ids)
    assert rows(sqlite_url) == 1500
    assert stats["inserted"] == 1500 and stats["duplicates"] == 0, "a failed batch was never half-delivered"


def test_delivered_events_free_the_bound(tmp_path, sqlite_url):
    """Shipped segments are deleted, so a small bound holds only what is not delivered yet."""
    rec = Recorder(db=sqlite_url, spool_dir=tmp_path / "spool", max_spool_bytes=60_000)
    for _ in range(10):
        for _ in range(200):  # ~30 KB
            rec.record(text_input="x" * 50)
        assert rec.flush(30)
    stats = rec.stats()
    rec.close()
    assert stats["dropped"] == 0 and stats["recorded"] == 2000
    assert rows(sqlite_url) == 2000


# --- ownership: a spool another local user could write to is never read --------------------------

NOBODY = 65534  # the tests run as root: a directory of another user's is one chown away


def plant_dead_writer(spool, text: str = "forged by nobody") -> str:
    """What another user can leave in a spool directory they can write to: a sub-spool whose
    lock is free (its writer looks dead), holding an event the next Recorder would ship."""
    sub = SubSpool.create(spool)
    writer = SpoolWriter(sub, fsync="never", segment_bytes=1 << 16, max_bytes=1 << 20)
    writer.append(orjson.dumps({"request_id": "forged", "ts": "2026-01-01T00:00:00Z", "status": "success",
                                "text_input": text}))
    writer.close()
    sub.release()
    return sub.name


def chown_tree(path, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)
    os.chown(path, uid, uid)


def test_a_spool_of_another_user_is_never_read_and_the_recorder_records_elsewhere(tmp_path, sqlite_url, caplog):
    spool = tmp_path / "shared-spool"
    spool.mkdir()
    planted = plant_dead_writer(spool)
    chown_tree(spool, NOBODY)
    caplog.set_level(logging.ERROR, logger="voxtrail.recorder")
    rec = Recorder(db=sqlite_url, spool_dir=spool)  # never raises into the service for this
    real = rec.record(text_input="real event")
    assert rec.flush(30)
    stats = rec.stats()
    assert "belongs to nobody (uid 65534)" in stats["spool_problem"] and "spool_dir" in stats["spool_problem"]
    assert stats["last_error"] == stats["spool_problem"] and not stats["spool"].startswith(str(spool))
    assert any("belongs to nobody" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert request_ids(sqlite_url) == [real]  # the forged event was not shipped
    assert (spool / planted).is_dir() and not (spool / "destination").exists()  # nor anything touched
    private = os.path.dirname(stats["spool"])
    assert rec.close()
    assert not os.path.exists(private)  # everything delivered: the private spool is gone


@pytest.mark.parametrize("plant", ["sub-spool", "destination"])
def test_a_spool_of_ours_holding_what_another_user_wrote_is_refused(tmp_path, sqlite_url, plant):
    spool = tmp_path / "spool"
    Recorder(db=sqlite_url, spool_dir=spool).close()  # ours, with its destination marker
    if plant == "sub-spool":  # written while the directory was still open to others, say
        chown_tree(spool / plant_dead_writer(spool), NOBODY)
    else:
        os.chown(spool / "destination", NOBODY, NOBODY)
    rec = Recorder(db=sqlite_url, spool_dir=spool)
    rec.record(text_input="x")
    assert rec.flush(30) and "which belongs to nobody (uid 65534)" in rec.stats()["spool_problem"]
    assert "forged" not in request_ids(sqlite_url)
    rec.close()


def test_an_orphan_appearing_later_is_not_adopted_unless_it_is_ours(tmp_path, caplog):
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    ours, theirs = plant_dead_writer(spool), plant_dead_writer(spool)
    chown_tree(spool / theirs, NOBODY)
    caplog.set_level(logging.WARNING, logger="voxtrail.recorder")
    adopted = list(SubSpool.orphans(spool, set()))
    assert [s.name for s in adopted] == [ours]
    for sub in adopted:
        sub.release()
    assert any(f"not adopting {spool / theirs}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode, refused", [(0o777, True), (0o775, True), (0o1777, False), (0o755, False)])
def test_a_spool_below_a_directory_others_can_write_to_is_refused_unless_sticky(tmp_path, sqlite_url, mode,
                                                                                 refused):
    parent = tmp_path / "parent"
    parent.mkdir()
    os.chmod(parent, mode)
    rec = Recorder(db=sqlite_url, spool_dir=parent / "spool")
    problem = rec.stats()["spool_problem"]
    rec.close()
    if refused:
        assert problem and f"directory {parent} above spool directory" in problem and "chmod go-w" in problem
    else:
        assert problem is None
