"""Retention: purge deletes exactly the expired rows, in batches, keeps rollups and a valid
chain, and a purged event delivered again is quarantined instead of counted twice."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa

from voxtrail import config
from voxtrail.event import EventBatch
from voxtrail.store import Store, purge
from voxtrail.store.verify import verify

NOW = purge.utcnow()


def event(rid: str, age_days: float, audit: bool, **extra) -> dict:
    row = {"request_id": rid, "ts": NOW - timedelta(days=age_days), "status": "success", "latency_ms": 100.0 + age_days,
           "emotion": "calm", "source": "http", **extra}
    if audit:
        row.update(user_id="alice", text_input=f"text of {rid}")
    return row


#: (request_id, age in days, audit?) in write order: old and new rows mixed in one write, so
#: links end up partly purged, with kept rows between purged ones.
WRITES = [
    [("w1-old-audit", 200, True), ("w1-old-ops", 100, False), ("w1-new-ops", 5, False), ("w1-old-audit2", 190, True)],
    [("w2-old-ops", 120, False), ("w2-old-ops2", 95, False)],  # entirely expired
    [("w3-mid-audit", 150, True), ("w3-mid-ops", 80, False), ("w3-new-audit", 1, True)],  # nothing expired
    [("w4-old-ops", 91, False), ("w4-mid-audit", 100, True), ("w4-old-audit", 181, True), ("w4-old-ops2", 92, False)],
]
EXPIRED = {"w1-old-audit", "w1-old-ops", "w1-old-audit2", "w2-old-ops", "w2-old-ops2", "w4-old-ops", "w4-old-audit",
           "w4-old-ops2"}
ALL = {rid for write in WRITES for rid, _, _ in write}


@pytest.fixture
def store(db_url):
    s = Store.open(db_url)
    for write in WRITES:
        s.write(EventBatch.from_records([event(*spec) for spec in write]))
    yield s
    s.close()


def request_ids(store) -> set[str]:
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.text("SELECT request_id FROM tts_events"))}


def rollup_calls(store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT SUM(calls) FROM voxtrail_rollup_daily_totals")).scalar())


def cutoffs() -> purge.Cutoffs:
    return purge.Retention(timedelta(days=180), timedelta(days=90)).cutoffs(NOW)


def test_purge_leaves_exactly_the_expected_rows_and_a_valid_chain(store):
    preview = purge.preview(store.engine, cutoffs())
    assert (preview.events, preview.audit_events, preview.operations_events) == (8, 3, 5)
    assert request_ids(store) == ALL  # a dry run deletes nothing
    calls = rollup_calls(store)

    result = purge.purge(store.engine, store.dialect, cutoffs(), batch=2)
    assert (result.events, result.audit_events, result.operations_events) == (8, 3, 5)
    assert result.batches == 4 and result.links_purged == 1  # write 2 lost all its rows
    assert request_ids(store) == ALL - EXPIRED
    assert rollup_calls(store) == calls  # the dashboard's history stays
    report = verify(store.engine, store.keyring)
    assert report.ok, report.problem
    assert (report.rows_checked, report.rows_purged) == (len(ALL - EXPIRED), 8)

    again = purge.purge(store.engine, store.dialect, cutoffs())
    assert again.events == 0 and verify(store.engine, store.keyring).ok


def test_after_a_purge_tampering_is_still_found(store):
    purge.purge(store.engine, store.dialect, cutoffs(), batch=3)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM tts_events WHERE request_id = 'w4-mid-audit'"))
    found = verify(store.engine, store.keyring).problem
    assert found is not None and "link 5" in found.message


def test_a_purged_event_delivered_again_is_quarantined_not_counted_twice(store):
    purge.purge(store.engine, store.dialect, cutoffs())
    calls = rollup_calls(store)
    again = Store.open(store.engine.url.render_as_string(hide_password=False))
    try:
        result = again.write(EventBatch.from_records([event("w1-old-ops", 100, False), event("fresh", 0, False)]))
    finally:
        again.close()
    assert (result.inserted, result.rejected) == (1, 1)
    assert rollup_calls(store) == calls + 1
    with store.engine.connect() as conn:
        reason = conn.execute(sa.text("SELECT reason FROM tts_rejects")).scalar()
    assert "older than the retention horizon" in reason
    assert verify(store.engine, store.keyring).ok


def test_retention_settings(tmp_path, monkeypatch):
    settings = config.Settings(db="sqlite://", tz="UTC", file={"retention": {"audit": "26w", "operations": "off"}})
    assert purge.Retention.from_settings(settings) == purge.Retention(timedelta(weeks=26), None)
    monkeypatch.setenv("VOXTRAIL_RETENTION_OPERATIONS", "72h")
    assert purge.Retention.from_settings(settings).operations == timedelta(hours=72)
    assert purge.Retention.from_settings(settings, audit="30").audit == timedelta(days=30)
    with pytest.raises(config.ConfigError, match="retention audit = '3 months'"):
        purge.Retention.from_settings(settings, audit="3 months")


def test_purge_cli_dry_run_then_purge(sqlite_url):
    with Store.open(sqlite_url) as s:
        for write in WRITES:
            s.write(EventBatch.from_records([event(*spec) for spec in write]))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "voxtrail", "purge", "--db", sqlite_url, *args],
                              capture_output=True, text=True, timeout=120)

    dry = run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would delete 8 events (3 audit, 5 operations, from ")
    done = run("--json", "--batch-size", "3")
    data = json.loads(done.stdout)
    assert data["events"] == 8 and data["dry_run"] is False and data["cutoffs"]["audit"]
    assert run("--dry-run").stdout.startswith("nothing to purge")
    bad = run("--audit", "soon")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "retention audit = 'soon'" in bad.stderr  # a bad flag


def test_serve_purges_on_its_schedule_and_logs_every_run(sqlite_url, caplog):
    """Each run is logged with its counts, what it deleted or that nothing was due (#18)."""
    import logging
    import time

    from fastapi.testclient import TestClient

    from voxtrail.web.app import create_app
    from voxtrail.web.settings import WebSettings

    with Store.open(sqlite_url) as s:
        for write in WRITES:
            s.write(EventBatch.from_records([event(*spec) for spec in write]))
        settings = WebSettings(db=sqlite_url, retention=purge.Retention(timedelta(days=180), timedelta(days=90)),
                               purge_every=timedelta(seconds=0.2), first_purge_after=timedelta(0))
        caplog.set_level(logging.INFO, logger="voxtrail.retention")
        with TestClient(create_app(settings, s)):
            deadline = time.monotonic() + 20
            while (request_ids(s) != ALL - EXPIRED or len(caplog.records) < 2) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert request_ids(s) == ALL - EXPIRED
        assert verify(s.engine, s.keyring).ok
    first, second = (r.getMessage() for r in caplog.records[:2])
    assert first.startswith("retention: deleted 8 events (3 audit, 5 operations, from ")
    assert second.startswith("retention: nothing to purge in ") and second.endswith("; next run in 0.2s")


def test_import_says_at_once_how_many_events_are_past_retention(sqlite_url, tmp_path):
    """#18: last year's logs were imported without a word, and `voxtrail serve` purged them a minute
    later. Import says how many are past retention and what happens to them; after a purge, the
    same events are quarantined, each its own reject, with the reason."""
    log = tmp_path / "audit.log"
    lines = [{"request_id": f"old-{i}", "user_id": 31, "status": "success",
              "created_at": f"{NOW - timedelta(days=300 + i):%Y-%m-%d %H:%M:%S}"} for i in range(3)]
    lines.append({"request_id": "new", "user_id": 31, "status": "success", "created_at": f"{NOW:%Y-%m-%d %H:%M:%S}"})
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))

    def voxtrail(*args):
        return subprocess.run([sys.executable, "-m", "voxtrail", *args, "--db", sqlite_url],
                              capture_output=True, text=True, timeout=120)

    shown = voxtrail("import", str(log), "--tz", "UTC")
    assert shown.returncode == 0, shown.stderr
    note = " ".join(shown.stderr.split())  # the terminal table wraps long lines
    assert ("3 events are older than the retention (audit 180d, operations 90d) and will be removed by the next "
            "purge") in note and "set [retention] audit/operations (or VOXTRAIL_RETENTION_AUDIT" in note
    assert json.loads(voxtrail("purge", "--json").stdout)["events"] == 3
    again = tmp_path / "again.log"  # the same events from another file, after the purge
    again.write_text("".join(json.dumps(x) + "\n" for x in reversed(lines)))
    data = json.loads(voxtrail("import", str(again), "--tz", "UTC", "--json").stdout)
    assert (data["imported"], data["duplicates"], data["rejected"], data["past_retention"]) == (0, 1, 3, 0)
    assert "note" not in data
    with Store.open(sqlite_url) as s, s.engine.connect() as conn:
        reasons = [r[0] for r in conn.execute(sa.text("SELECT reason FROM tts_rejects"))]
    assert len(reasons) == 3 and all("older than the retention horizon (audit events before" in r for r in reasons)


def test_serve_logs_voxtrail_info_lines(capsys):
    """Under uvicorn's logging config the voxtrail loggers (retention runs) had no handler: their
    info lines were dropped. serve's config gives them uvicorn's."""
    import logging
    import logging.config

    from voxtrail.cli.serve_cmd import _log_config

    logging.config.dictConfig(_log_config("info"))
    try:
        logging.getLogger("voxtrail.retention").info("retention: deleted 3 events")
        logging.getLogger("voxtrail.retention").debug("not at info")
    finally:
        logging.getLogger("voxtrail").handlers.clear()
        logging.getLogger("voxtrail").propagate = True
        logging.getLogger("voxtrail").setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "retention: deleted 3 events" in err and "not at info" not in err
