"""A format that raises on some line (a bug) costs that line, not the import or the tail.

The formats with the bug are in fragile_format.py, registered for these tests only.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

import fragile_format
from fragile_format import BOOM, expected_ts, ok_lines
from test_format_indextts import FAIL, ok_block
from voxtrail.sources.files import salvage
from voxtrail.sources.files.follow import follow
from voxtrail.sources.files.importer import Importer
from voxtrail.sources.formats import Chunk, ParseContext
from voxtrail.sources.formats import detect
from voxtrail.sources.formats.detect import FORMATS, detect_format
from voxtrail.store import Store

HERE = Path(__file__).parent
REASON = "fragile: parser error: ValueError: boom"


@pytest.fixture(autouse=True)
def fragile_formats():
    with fragile_format.registered():
        yield


def ctx(state=None, final=False):
    return ParseContext("s", "f.log", "UTC", {} if state is None else state, final)


def offsets_of(data: bytes, line: str) -> list[int]:
    out, at = [], 0
    for raw in data.split(b"\n")[:-1]:
        if raw.decode() == line or (line == "ok" and raw.startswith(b"ok ")):
            out.append(at)
        at += len(raw) + 1
    return out


def test_the_line_a_format_raises_on_is_quarantined_and_the_rest_parsed():
    lines = [*ok_lines(range(0, 5)), f"{BOOM}\n", *ok_lines(range(5, 9)), "# noise\n", f"{BOOM}\n", "ok 9\n"]
    data = "".join(lines).encode()
    result, faults = salvage.parse_chunk(FORMATS["fragile"], Chunk(100, data), ctx())
    frame = result.batch.frame
    assert frame["source_offset"].to_list() == [o + 100 for o in offsets_of(data, "ok")]
    assert frame["ts"].to_list() == [expected_ts(line) for line in lines if line.startswith("ok ")]
    booms = [o + 100 for o in offsets_of(data, BOOM)]
    assert [(r.offset, r.reason, r.excerpt) for r in result.batch.rejects] == [(o, REASON, b"BOOM") for o in booms]
    assert [f.offset for f in faults] == booms and "second line" not in faults[0].reason
    assert result.skipped == 1 and result.consumed == 100 + len(data)
    assert result.batch.constants["source_format"] == "fragile"


def test_a_chunk_of_bad_lines_costs_one_parse_a_line(monkeypatch):
    data = f"{BOOM}\n".encode() * 200
    calls = []
    fmt = FORMATS["fragile"]
    monkeypatch.setattr(fmt, "parse", lambda chunk, c, real=fmt.parse: calls.append(1) or real(chunk, c))
    result, faults = salvage.parse_chunk(fmt, Chunk(0, data), ctx())
    assert len(result.batch.rejects) == len(faults) == 200 and result.batch.frame.height == 0
    assert result.consumed == len(data) and len(calls) <= 1 + 200


def test_a_record_being_read_when_the_format_raised_goes_with_the_bad_line():
    first, second = ok_block(1740787200), ok_block(1740787209)
    cut = first.index(b">> RTF")
    data = first + second[:cut] + b"BOOM\n" + second[cut:] + ok_block(1740787300)
    state: dict = {}
    result, faults = salvage.parse_chunk(FORMATS["fragile-blocks"], Chunk(0, data, final=True), ctx(state, final=True))
    frame = result.batch.frame
    start = len(first)
    assert frame["source_offset"].to_list() == [0, data.index(b"Emo control", start + 1 + cut)]
    assert [(r.offset, r.reason) for r in result.batch.rejects] == [
        (start, f"fragile-blocks: record cut short by a parser error at byte {start + cut}"),
        (start + cut, "fragile-blocks: parser error: RuntimeError: boom in a block"),
    ]
    assert result.consumed == len(data) and state["last_ts"] == 1740787300
    # The rest of the cut-short block is console noise now, counted as skipped, not lost.
    assert result.skipped == second[cut:].count(b"\n")


def test_a_held_back_failure_keeps_waiting_for_its_time():
    data = FAIL + b"BOOM\n" + FAIL
    result, faults = salvage.parse_chunk(FORMATS["fragile-blocks"], Chunk(0, data), ctx())
    # The first failed block has no time yet and was held back: it is cut short with the bad line;
    # the second waits for a later success, as it would without the bug.
    assert [r.offset for r in result.batch.rejects] == [0, len(FAIL)]
    assert result.consumed == len(FAIL) + 5 and result.batch.frame.height == 0


LINE_KINDS = st.sampled_from(["ok", "boom", "noise", "blank"])


@given(kinds=st.lists(LINE_KINDS, max_size=60), cuts=st.lists(st.integers(0, 60), max_size=6))
def test_property_every_line_is_an_event_a_reject_or_skipped(kinds, cuts):
    lines = [{"ok": f"ok {i}\n", "boom": f"{BOOM}\n", "noise": "# x\n", "blank": "\n"}[k] for i, k in enumerate(kinds)]
    data = "".join(lines).encode()
    starts = [sum(len(x) for x in lines[:i]) for i in range(len(lines) + 1)]
    position, state, events, rejects, skipped = 0, {}, [], [], 0
    for end in sorted({starts[min(c, len(lines))] for c in cuts} | {len(data)}):
        if end <= position:
            continue
        result, _ = salvage.parse_chunk(FORMATS["fragile"], Chunk(position, data[position:end]), ctx(state))
        assert result.consumed == end
        frame = result.batch.frame
        events += frame["source_offset"].to_list() if frame.height else []
        rejects += [(r.offset, r.reason) for r in result.batch.rejects]
        skipped += result.skipped
        position = end
    assert events == [starts[i] for i, k in enumerate(kinds) if k == "ok"]
    assert rejects == [(starts[i], REASON) for i, k in enumerate(kinds) if k == "boom"]
    assert skipped == sum(k in ("noise", "blank") for k in kinds)


def test_detection_survives_a_format_whose_sniff_raises(monkeypatch, caplog):
    def broken(head):
        raise KeyError("a sniffing bug")

    monkeypatch.setattr(FORMATS["fragile"], "sniff", broken)
    monkeypatch.setattr(detect, "_failed_sniffs", set())
    head = open("/work/shared/samples/tts.log", "rb").read()[:65536]
    with caplog.at_level(logging.WARNING, logger="voxtrail.sources.formats.detect"):
        assert detect_format(head) == "text"
        assert detect_format(b"ok 1\nok 2\n") is None
    assert [r.getMessage() for r in caplog.records] == [
        "voxtrail: the fragile format failed to examine a file's first lines (KeyError: 'a sniffing bug'); "
        "taken as not fragile"]


def rows(store: Store, sql: str) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_import_quarantines_the_lines_a_format_raises_on(db_url, tmp_path, caplog):
    log = tmp_path / "fragile.log"
    lines = [*ok_lines(range(0, 300)), f"{BOOM}\n", *ok_lines(range(300, 600)), f"{BOOM}\n", *ok_lines(range(600, 700))]
    log.write_text("".join(lines))
    store = Store.open(db_url)
    try:
        with caplog.at_level(logging.WARNING, logger="voxtrail.sources.files.importer"):
            summary = Importer(store, fmt="auto", tz="UTC", chunk_bytes=4096).run([str(log)])
        assert summary.files[0].format == "fragile" and summary.files[0].status == "ok"
        assert (summary.total("imported"), summary.total("rejected")) == (700, 2)
        booms = offsets_of(log.read_bytes(), BOOM)
        assert rows(store, "SELECT source_offset, reason FROM tts_rejects ORDER BY source_offset") == [
            (o, REASON) for o in booms]
        assert rows(store, "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM tts_events") == [(700, 700)]
        warnings = [r.getMessage() for r in caplog.records if r.name == "voxtrail.sources.files.importer"]
        assert len(warnings) == 1 and f"failed on 2 line(s) of {log}, first at byte {booms[0]}" in warnings[0]
        again = Importer(store, fmt="auto", tz="UTC").run([str(log)])  # exactly once, bad lines included
        assert (again.total("imported"), again.total("rejected")) == (0, 0)
    finally:
        store.close()


def test_a_file_the_store_refuses_is_reported_and_the_other_files_import(sqlite_url, tmp_path):
    wrong, good = tmp_path / "wrong.log", tmp_path / "good.log"
    wrong.write_text("".join([*ok_lines(range(5)), "WRONG\n"]))
    good.write_text("".join(ok_lines(range(100, 110))))
    store = Store.open(sqlite_url)
    try:
        summary = Importer(store, fmt="wrong-output", tz="UTC").run([str(wrong), str(good)])
        assert [(f.status, f.imported) for f in summary.files] == [("error", 0), ("ok", 10)]
        assert summary.files[0].message == (
            f"importing {wrong} stopped at byte 0 on an unexpected error (ValueError: unknown event field(s): "
            "bogus); what came before is stored")
        assert count(store) == 10
    finally:
        store.close()


def fragile_voxtrail(*args: str, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRAIL_")}
    return subprocess.Popen([sys.executable, str(HERE / "fragile_format.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_import_command_with_a_parser_bug_says_it_once_and_succeeds(sqlite_url, tmp_path):
    log = tmp_path / "fragile.log"
    log.write_text("".join([*ok_lines(range(10)), f"{BOOM}\n", *ok_lines(range(10, 20))]))
    proc = fragile_voxtrail("import", str(log), "--db", sqlite_url, "--tz", "UTC", "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert '"imported": 20' in out and '"rejected": 1' in out
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "parser failed" in line] == [
        f"voxtrail: the fragile parser failed on 1 line(s) of {log}, first at byte 50 ({REASON}); "
        "quarantined in tts_rejects, the rest imported"]


def count(store: Store) -> int:
    return rows(store, "SELECT COUNT(*) FROM tts_events")[0][0]


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_tail_goes_on_past_lines_its_parser_raises_on(sqlite_url, tmp_path):
    log = tmp_path / "fragile.log"
    log.write_text("".join(ok_lines(range(5))))
    store = Store.open(sqlite_url)
    proc = fragile_voxtrail("tail", str(log), "--db", sqlite_url, "--tz", "UTC", "--interval", "0.1")
    try:
        wait_until(lambda: count(store) == 5, timeout=60)  # start-up included
        for batch in range(3):
            with open(log, "a") as f:
                f.write(f"{BOOM}\n" + "".join(ok_lines(range(5 + 5 * batch, 10 + 5 * batch))))
            wait_until(lambda n=10 + 5 * batch: count(store) == n)
        assert proc.poll() is None  # still following
        assert len(rows(store, "SELECT 1 FROM tts_rejects")) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        store.close()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert sum("parser failed" in line for line in err.splitlines()) == 3  # one line a pass


def test_follow_keeps_importing_after_a_parser_bug(sqlite_url, tmp_path):
    """The loop tail runs, in this process: the bad lines of every pass are quarantined."""
    log = tmp_path / "fragile.log"
    log.write_text("".join([f"{BOOM}\n", *ok_lines(range(3))]))
    store = Store.open(sqlite_url)
    stop, errors = threading.Event(), []
    worker = threading.Thread(target=follow, args=(Importer(store, fmt="fragile", tz="UTC"), [str(log)]),
                              kwargs={"stop": stop, "poll_interval": 0.05, "on_error": errors.append})
    worker.start()
    try:
        wait_until(lambda: count(store) == 3)
        with open(log, "a") as f:
            f.write("".join([f"{BOOM}\n", f"{BOOM}\n", *ok_lines(range(3, 6))]))
        wait_until(lambda: count(store) == 6)
        assert worker.is_alive() and not errors
    finally:
        stop.set()
        worker.join(timeout=30)
    assert rows(store, "SELECT COUNT(*) FROM tts_rejects") == [(3,)]
    store.close()
