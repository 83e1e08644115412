"""Exactly-once import: re-runs, appends, every kind of rotation, on every database."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from logdata import Expected, text_lines, write
from voxtrail.sources.files.importer import Importer, expand_paths
from voxtrail.store import Store


def stats(store: Store) -> tuple[int, int, float, int]:
    with store.engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT COUNT(*), SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), "
            "SUM(latency_ms), SUM(text_length) FROM tts_events"
        )).one()
    return int(row[0]), int(row[1] or 0), round(float(row[2] or 0), 3), int(row[3] or 0)


def expect(exp: Expected) -> tuple[int, int, float, int]:
    return exp.events, exp.failed, round(exp.latency_ms, 3), exp.text_length


def run(store: Store, *patterns: str, **kw):
    return Importer(store, tz="UTC", **kw).run(expand_paths(patterns))


@pytest.fixture
def store(db_url):
    s = Store.open(db_url)
    yield s
    s.close()


def test_import_counts_and_reimport_is_noop(store, tmp_path):
    exp = text_lines(2000, seed=1)
    log = tmp_path / "tts.log"
    write(log, exp)
    first = run(store, str(log))
    assert first.total("imported") == 2000 and first.total("rejected") == 0
    assert stats(store) == expect(exp)
    again = run(store, str(log))
    assert again.total("imported") == 0 and again.total("duplicates") == 0
    assert stats(store) == expect(exp)


def test_append_imports_only_new_lines(store, tmp_path):
    a, b = text_lines(500, seed=2), text_lines(300, seed=3)
    log = tmp_path / "tts.log"
    write(log, a)
    run(store, str(log))
    write(log, b, mode="a")
    summary = run(store, str(log))
    assert summary.total("imported") == 300
    assert stats(store) == expect(a.add(b))


def test_partial_last_line_waits_for_its_newline(store, tmp_path):
    exp = text_lines(3, seed=4)
    log = tmp_path / "tts.log"
    log.write_text(exp.lines[0] + exp.lines[1] + exp.lines[2][:30], encoding="utf-8")
    assert run(store, str(log)).total("imported") == 2
    with open(log, "a", encoding="utf-8") as f:
        f.write(exp.lines[2][30:])
    assert run(store, str(log)).total("imported") == 1
    assert stats(store) == expect(exp)


def test_rename_rotation(store, tmp_path):
    a, b, c = text_lines(400, seed=5), text_lines(100, seed=6), text_lines(250, seed=7)
    log = tmp_path / "tts.log"
    write(log, a)
    run(store, str(tmp_path / "tts.log*"))
    write(log, b, mode="a")  # written just before rotation, not yet imported
    os.rename(log, tmp_path / "tts.log.1")
    write(log, c)
    summary = run(store, str(tmp_path / "tts.log*"))
    assert summary.total("imported") == 350
    assert stats(store) == expect(a.add(b).add(c))


def test_copytruncate_rotation(store, tmp_path):
    a, b, c = text_lines(400, seed=8), text_lines(100, seed=9), text_lines(250, seed=10)
    log = tmp_path / "tts.log"
    write(log, a)
    run(store, str(log))
    write(log, b, mode="a")
    shutil.copyfile(log, tmp_path / "tts.log.1")
    with open(log, "r+b") as f:  # same inode, emptied in place
        f.truncate(0)
    write(log, c, mode="a")
    summary = run(store, str(tmp_path / "tts.log*"))
    assert summary.total("imported") == 350
    assert stats(store) == expect(a.add(b).add(c))


def test_gzipped_rotation_is_recognised(store, tmp_path):
    a, b = text_lines(300, seed=11), text_lines(50, seed=12)
    log = tmp_path / "tts.log"
    write(log, a)
    run(store, str(log))
    write(log, b, mode="a")
    with open(log, "rb") as src, gzip.open(tmp_path / "tts.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(log)
    summary = run(store, str(tmp_path / "tts.log*"))
    assert summary.total("imported") == 50
    assert stats(store) == expect(a.add(b))


def test_truncated_and_rewritten_file(store, tmp_path):
    a, b = text_lines(300, seed=13), text_lines(40, seed=14)
    log = tmp_path / "tts.log"
    write(log, a)
    run(store, str(log))
    with open(log, "r+b") as f:
        f.truncate(0)
    write(log, b, mode="a")
    assert run(store, str(log)).total("imported") == 40
    assert stats(store) == expect(a.add(b))


def test_new_file_reusing_the_inode(store, tmp_path):
    a, b = text_lines(200, seed=15), text_lines(60, seed=16)
    log = tmp_path / "tts.log"
    write(log, a)
    run(store, str(log))
    inode = os.stat(log).st_ino
    os.remove(log)
    write(log, b)  # ext4/tmpfs usually hand the freed inode straight back
    summary = run(store, str(log))
    assert summary.total("imported") == 60, f"inode reused: {os.stat(log).st_ino == inode}"
    assert stats(store) == expect(a.add(b))


def test_rewritten_with_the_same_beginning(store, tmp_path):
    """A file truncated and rewritten whose first KB is identical must not be skipped."""
    a = text_lines(200, seed=17)
    log = tmp_path / "tts.log"
    write(log, a)
    run(store, str(log))
    b = text_lines(20, seed=18)
    rewritten = Expected(lines=a.lines[:30]).add(b)
    write(log, rewritten)
    summary = run(store, str(log))
    # the 30 head lines are a new stream's lines too: they are stored again under new ids
    assert summary.total("imported") == 50


def test_copy_of_an_imported_file_imports_nothing(store, tmp_path):
    a = text_lines(100, seed=19)
    write(tmp_path / "tts.log", a)
    run(store, str(tmp_path / "tts.log"))
    shutil.copyfile(tmp_path / "tts.log", tmp_path / "backup.log")
    assert run(store, str(tmp_path / "backup.log")).total("imported") == 0


def test_malformed_lines_are_quarantined_and_the_import_goes_on(store, tmp_path):
    exp = text_lines(100, seed=20)
    bad = [b"garbage line\n", b"[2025-03-01 00:00:00] INFO - TextLen=abc\n", b"\xff\xfe\x00broken\r\n"]
    log = tmp_path / "tts.log"
    with open(log, "wb") as f:
        f.write("".join(exp.lines[:50]).encode())
        offsets = []
        for line in bad:
            offsets.append(f.tell())
            f.write(line)
        f.write("".join(exp.lines[50:]).encode())
    summary = run(store, str(log))
    assert summary.total("imported") == 100 and summary.total("rejected") == 3
    assert stats(store) == expect(exp)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT source_offset, reason, excerpt, source_file FROM tts_rejects ORDER BY source_offset"
        )).all()
    assert [r[0] for r in rows] == offsets
    assert all(r[1] for r in rows) and rows[0][2].startswith("garbage line")
    assert rows[0][3] == str(log)
    assert run(store, str(log)).total("rejected") == 0  # quarantined once


def test_bom_crlf_and_chinese(store, tmp_path):
    exp = text_lines(50, seed=21)
    log = tmp_path / "tts.log"
    log.write_bytes(b"\xef\xbb\xbf" + "".join(exp.lines).replace("\n", "\r\n").encode("utf-8"))
    assert run(store, str(log)).total("imported") == 50
    assert stats(store) == expect(exp)
    with store.engine.connect() as conn:
        emotions = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT emotion FROM tts_events"))}
    assert "愤怒" in emotions and not any(e.endswith("\r") for e in emotions)


def test_small_chunks_give_the_same_result(store, tmp_path):
    exp = text_lines(700, seed=22)
    write(tmp_path / "tts.log", exp)
    summary = run(store, str(tmp_path / "tts.log"), chunk_bytes=1000)
    assert summary.total("imported") == 700
    assert stats(store) == expect(exp)


def test_time_zone_of_naive_timestamps(sqlite_url, tmp_path):
    log = tmp_path / "tts.log"
    log.write_text("[2025-03-01 08:00:00,250] INFO - TextLen=5, Emotion=happy, Duration=1.0s, Success=True\n")
    store = Store.open(sqlite_url)
    Importer(store, tz="Asia/Shanghai").run([str(log)])
    with store.engine.connect() as conn:
        ts = conn.execute(sa.text("SELECT ts FROM tts_events")).scalar_one()
    store.close()
    assert str(ts).startswith("2025-03-01 00:00:00.250")


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "logs"


def test_every_format_detected_and_imported(store):
    summary = run(store, str(EXAMPLES / "*"))
    by_format = {f.format: f.imported for f in summary.files}
    assert by_format == {"text": 300, "jsonl": 300, "audit": 300, "indextts": 300}
    assert summary.total("rejected") == 0
    with store.engine.connect() as conn:
        failed_blocks = conn.execute(sa.text(
            "SELECT COUNT(*) FROM tts_events WHERE source_format = 'indextts' AND status = 'failed'")).scalar_one()
        stages = conn.execute(sa.text(
            "SELECT COUNT(*) FROM tts_events WHERE source_format = 'indextts' AND gpt_gen_ms IS NOT NULL "
            "AND s2mel_ms IS NOT NULL AND rtf IS NOT NULL")).scalar_one()
    log = (EXAMPLES / "webui.log").read_text(encoding="utf-8")
    assert failed_blocks == log.count("Traceback (most recent call last):")
    assert stages == log.count(">> RTF:")


def test_multiline_blocks_across_chunk_boundaries(db_url, tmp_path):
    whole, pieces = Store.open(db_url), None
    try:
        big = Importer(whole, tz="UTC").run([str(EXAMPLES / "webui.log")])
        with whole.engine.connect() as conn:
            expected = conn.execute(sa.text(
                "SELECT request_id, ts, status, latency_ms, rtf, emotion_vector FROM tts_events ORDER BY request_id")).all()
    finally:
        whole.close()
    shutil.copyfile(EXAMPLES / "webui.log", tmp_path / "webui.log")
    pieces = Store.open(db_url)
    try:
        # a fresh database: same stream id, so the same request ids are expected
        with pieces.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM tts_events"))
            conn.execute(sa.text("DELETE FROM import_checkpoints"))
        small = Importer(pieces, tz="UTC", chunk_bytes=4096).run([str(tmp_path / "webui.log")])
        with pieces.engine.connect() as conn:
            got = conn.execute(sa.text(
                "SELECT request_id, ts, status, latency_ms, rtf, emotion_vector FROM tts_events ORDER BY request_id")).all()
    finally:
        pieces.close()
    assert big.total("imported") == small.total("imported") == 300
    assert got == expected


def test_same_audit_records_in_two_files_are_stored_once(store, tmp_path):
    lines = (EXAMPLES / "audit.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "node-a.jsonl").write_text("".join(lines[:200]), encoding="utf-8")
    (tmp_path / "node-b.jsonl").write_text("".join(lines[100:]), encoding="utf-8")
    summary = run(store, str(tmp_path / "node-*.jsonl"))
    assert summary.total("imported") == 300 and summary.total("duplicates") == 100
    assert stats(store)[0] == 300


def test_two_importers_at_once_store_each_line_once(db_url, tmp_path):
    exp = text_lines(20000, seed=23)
    write(tmp_path / "tts.log", exp)
    Store.open(db_url).close()
    procs = [
        subprocess.Popen([sys.executable, "-m", "voxtrail", "import", str(tmp_path / "tts.log"), "--db", db_url,
                          "--tz", "UTC", "--json", "--chunk-bytes", "65536"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    imported = sum(json.loads(out)["imported"] for out, _ in results)
    assert imported == 20000
    with Store.open(db_url) as store:
        assert stats(store) == expect(exp)


def test_damaged_gzip_is_reported_and_other_files_still_import(store, tmp_path):
    exp = text_lines(100, seed=24)
    write(tmp_path / "good.log", exp)
    payload = "".join(text_lines(5000, seed=25).lines).encode()
    (tmp_path / "bad.log.gz").write_bytes(gzip.compress(payload)[:3000])
    summary = run(store, str(tmp_path / "good.log"), str(tmp_path / "bad.log.gz"))
    by_path = {os.path.basename(f.path): f for f in summary.files}
    assert by_path["good.log"].imported == 100
    assert by_path["bad.log.gz"].status == "error" and "gzip" in by_path["bad.log.gz"].message
    assert stats(store)[0] >= 100


def test_huge_line_is_quarantined_not_held(store, tmp_path, monkeypatch):
    from voxtrail.sources.files import reader

    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 100_000)
    exp = text_lines(20, seed=26)
    log = tmp_path / "tts.log"
    with open(log, "w", encoding="utf-8") as f:
        f.writelines(exp.lines[:10])
        huge_at = f.tell()
        f.write("[2025-03-01 00:00:00] INFO - " + "x" * 300_000 + "\n")
        f.writelines(exp.lines[10:])
    summary = run(store, str(log), chunk_bytes=16384)
    assert summary.total("imported") == 20 and summary.total("rejected") == 1
    with store.engine.connect() as conn:
        offset, reason = conn.execute(sa.text("SELECT source_offset, reason FROM tts_rejects")).one()
    assert offset == huge_at and "longer than" in reason
    assert stats(store) == expect(exp)


def test_restarted_service_rewriting_the_same_head_each_time(store, tmp_path):
    """`python webui.py > tts.log` after each restart: the same first KB, then new lines.

    Each rewrite is a new stream, including the third and fourth with that beginning."""
    head = text_lines(15, seed=79)
    assert len("".join(head.lines)) > 1024
    log = tmp_path / "tts.log"
    total = 0
    for restart, n in enumerate((30, 12, 20, 5)):
        write(log, head.add(text_lines(n, seed=80 + restart)))  # truncates and rewrites
        imported = run(store, str(log)).total("imported")
        assert imported == 15 + n, restart
        total += imported
    assert stats(store)[0] == total


def test_file_vanishing_during_import_is_reported(store, tmp_path, monkeypatch):
    from voxtrail.sources.files import reader

    write(tmp_path / "a.log", text_lines(10, seed=90))
    write(tmp_path / "b.log", text_lines(10, seed=91))
    real_open = reader.open_content
    opened: list[str] = []

    def open_and_vanish(path):
        opened.append(path)
        # a.log disappears after its head was read and before its lines are
        if path.endswith("a.log") and opened.count(path) == 2:
            os.remove(path)
        return real_open(path)

    monkeypatch.setattr(reader, "open_content", open_and_vanish)
    summary = run(store, str(tmp_path / "a.log"), str(tmp_path / "b.log"))
    by_name = {os.path.basename(f.path): f for f in summary.files}
    assert by_name["a.log"].status == "error" and "cannot read" in by_name["a.log"].message
    assert by_name["b.log"].imported == 10


def test_resume_after_a_huge_line_followed_by_a_short_one(store, tmp_path, monkeypatch):
    """The checkpoint's tail hash must cover the skipped line's bytes, or the next run would
    take the file for a rewritten one and import it all again."""
    from voxtrail.sources.files import reader

    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 100_000)
    a, b = text_lines(10, seed=27), text_lines(10, seed=28)
    log = tmp_path / "tts.log"
    with open(log, "w", encoding="utf-8") as f:
        f.writelines(a.lines)
        f.write("y" * 300_000 + "\n")
        f.write("short\n")
    first = run(store, str(log), chunk_bytes=16384)
    assert (first.total("imported"), first.total("rejected")) == (10, 2)
    write(log, b, mode="a")
    second = run(store, str(log), chunk_bytes=16384)
    assert (second.total("imported"), second.total("rejected")) == (10, 0)
    assert stats(store) == expect(a.add(b))
