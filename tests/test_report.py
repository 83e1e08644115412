"""voxtrail report: the dashboard's figures as tables, --json as the panels, one-line errors."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from test_cli import assert_one_line_error, voxtrail
from test_query import KNOWN
from voxtrail.event import EventBatch
from voxtrail.query.filters import Filters
from voxtrail.query.panels import dashboard
from voxtrail.store.api import Store

SINCE, UNTIL = "2026-01-05T00:00:00Z", "2026-01-07T00:00:00Z"


def _store(url):
    with Store.open(url) as s:
        s.write(EventBatch.from_records(KNOWN))


def test_tables(sqlite_url):
    _store(sqlite_url)
    proc = voxtrail("report", "--db", sqlite_url, "--since", SINCE, "--until", UNTIL, env={"COLUMNS": "160"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for title in ("Summary", "per day", "Per emotion", "text length", "percentiles", "Top errors", "Nodes",
                  "Model versions"):
        assert title in out, title
    assert "2026-01-05" in out and "75.00 %" in out and "250.0 ms" in out  # day 1: 4 calls, 75 %, 250 ms
    assert "OOM" in out and "66.67 %" in out


def test_json_is_the_dashboard(db_url):
    _store(db_url)
    proc = voxtrail("report", "--db", db_url, "--since", SINCE, "--until", UNTIL, "--node", "n2", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    f = Filters(since=datetime(2026, 1, 5, tzinfo=timezone.utc), until=datetime(2026, 1, 7, tzinfo=timezone.utc),
                node=("n2",))
    with Store.open(db_url) as s:
        expected = dashboard(s, f, messages=True)  # the CLI reads the database: messages included
    assert data["panels"] == json.loads(json.dumps(expected["panels"]))
    assert data["panels"]["summary"]["rows"][0][0] == 2 and data["filters"]["node"] == "n2"


def test_time_zone_and_empty_range(sqlite_url):
    _store(sqlite_url)
    proc = voxtrail("report", "--db", sqlite_url, "--since", "2026-01-05", "--until", "2026-01-07",
                    "--tz", "Asia/Shanghai", "--json")
    data = json.loads(proc.stdout)
    assert data["since"] == (datetime(2026, 1, 4, 16, tzinfo=timezone.utc)).isoformat()
    assert [r[:2] for r in data["panels"]["daily"]["rows"]] == [["2026-01-05", 3], ["2026-01-06", 4]]
    proc = voxtrail("report", "--db", sqlite_url, "--since", "2020-01-01", "--until", "2020-01-02")
    assert proc.returncode == 0 and "no calls in this range" in proc.stdout


def test_bad_input_is_one_line(sqlite_url):
    assert_one_line_error(voxtrail("report", "--db", sqlite_url, "--since", "last tuesday"), "since")
    assert_one_line_error(voxtrail("report", "--db", sqlite_url, "--tz", "Mars/Base"), "time zone")
    assert_one_line_error(voxtrail("report", "--db", sqlite_url, "--since", "1d", "--until", "2d"), "before")
