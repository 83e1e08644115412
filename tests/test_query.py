"""The query layer against known, hand-computable data, on SQLite, PostgreSQL and MySQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from voxtrail.event import EventBatch
from voxtrail.query.filters import Filters
from voxtrail.query.panels import PANELS, dashboard, filter_options
from voxtrail.store.api import Store

UTC = timezone.utc
DAY1 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def ev(i, hour, minute=0, *, day=DAY1, status="success", latency=1000.0, length=100, emotion="happy",
       node="n1", version="1", control="text", error=None, rtf=0.5, audio=2000.0):
    ts = (day + timedelta(hours=hour, minutes=minute)).replace(tzinfo=None)
    return {
        "request_id": f"r{i}", "ts": ts, "status": status, "latency_ms": latency, "text_length": length,
        "emotion": emotion, "node": node, "model": "M", "model_version": version, "emotion_control": control,
        "error_type": error, "error_message": f"{error} happened" if error else None, "source": "http",
        "rtf": rtf if status == "success" else None, "audio_length_ms": audio if status == "success" else None,
        "gpt_gen_ms": 500.0 if status == "success" else None, "s2mel_ms": 200.0 if status == "success" else None,
    }


KNOWN = [
    # day 1 (2026-01-05 UTC)
    ev(1, 9, latency=100, length=10, emotion="happy"),
    ev(2, 9, 30, latency=200, length=60, emotion="happy", node="n2", version="2"),
    ev(3, 10, latency=300, length=200, emotion="sad"),
    ev(4, 23, 30, latency=400, length=30, emotion="sad", status="failed", error="OOM", node="n2"),
    # day 2
    ev(5, 24 + 1, latency=500, length=149, emotion=None, control="speaker"),
    ev(6, 24 + 2, latency=600, length=150, emotion="happy", status="failed", error="OOM"),
    ev(7, 24 + 2, 10, latency=700, length=None, emotion="happy", status="failed", error="Timeout", version="2"),
]
RANGE = Filters(since=DAY1, until=DAY1 + timedelta(days=2))


@pytest.fixture
def store(db_url):
    s = Store.open(db_url)
    s.write(EventBatch.from_records(KNOWN))
    yield s
    s.close()


def rows(panel):
    return [dict(zip(panel["columns"], r)) for r in panel["rows"]]


def test_daily_hourly_and_summary(store):
    d = dashboard(store, RANGE)
    p = d["panels"]
    assert rows(p["daily"]) == [
        {"time": "2026-01-05", "calls": 4, "success_rate": 75.0, "mean_latency": 250.0},
        {"time": "2026-01-06", "calls": 3, "success_rate": 33.33, "mean_latency": 600.0},
    ]
    hourly = rows(p["hourly"])
    assert len(hourly) == 48 and hourly[9] == {"time": "2026-01-05T09:00:00+00:00", "calls": 2,
                                                 "success_rate": 100.0, "mean_latency": 150.0}
    assert hourly[11]["calls"] == 0 and hourly[11]["mean_latency"] is None
    (s,) = rows(p["summary"])
    assert s["calls"] == 7 and s["failures"] == 3 and s["success_rate"] == pytest.approx(57.14)
    assert s["mean_latency"] == 400.0
    # Nearest rank: p50 of 100..700 is the 4th value (400), p95 the 7th (700), within 1 %.
    assert s["p50_latency"] == pytest.approx(400, rel=0.01)
    assert s["p95_latency"] == pytest.approx(700, rel=0.01)
    assert s["mean_rtf"] == 0.5 and s["mean_audio_length"] == 2.0
    assert p["daily"]["units"]["mean_latency"] == "ms" and p["daily"]["units"]["success_rate"] == "%"
    assert not any(panel["empty"] for panel in p.values())


def test_by_emotion_length_node_model(store):
    p = dashboard(store, RANGE)["panels"]
    assert rows(p["by_emotion"]) == [
        {"emotion": "happy", "calls": 4, "mean_latency": 400.0, "success_rate": 50.0},
        {"emotion": "sad", "calls": 2, "mean_latency": 350.0, "success_rate": 50.0},
        {"emotion": None, "calls": 1, "mean_latency": 500.0, "success_rate": 100.0},
    ]
    # Seed 000's CASE: <50, <150, else; a NULL text length is in no bucket.
    assert rows(p["by_text_length"]) == [
        {"length_bucket": "<50", "calls": 2, "success_rate": 50.0, "mean_latency": 250.0, "mean_latency_success": 100.0},
        {"length_bucket": "50-150", "calls": 2, "success_rate": 100.0, "mean_latency": 350.0, "mean_latency_success": 350.0},
        {"length_bucket": ">150", "calls": 2, "success_rate": 50.0, "mean_latency": 450.0, "mean_latency_success": 300.0},
    ]
    nodes = rows(p["by_node"])
    assert [(n["node"], n["calls"], n["mean_latency"]) for n in nodes] == [("n1", 5, 440.0), ("n2", 2, 300.0)]
    assert nodes[1]["p95_latency"] == pytest.approx(400, rel=0.01)
    models = rows(p["by_model"])
    assert [(m["model_version"], m["calls"], m["success_rate"]) for m in models] == [("1", 5, 60.0), ("2", 2, 50.0)]
    assert models[0]["p50_latency"] == pytest.approx(400, rel=0.01)  # 100,300,400,500,600 -> 3rd


def test_heatmap_errors_stages_failure_rate(store):
    p = dashboard(store, RANGE)["panels"]
    cells = {(r[0], r[1]): r[2] for r in p["heatmap"]["rows"]}
    assert len(cells) == 168 and cells[(0, 9)] == 2 and cells[(1, 2)] == 2 and sum(cells.values()) == 7
    assert rows(p["errors"]) == [
        {"error_type": "OOM", "calls": 2, "share": 66.67},
        {"error_type": "Timeout", "calls": 1, "share": 33.33},
    ]
    assert p["errors"]["failures"] == 3
    # The messages only when asked for (auditors, the CLI): text from the events.
    messages = dashboard(store, RANGE, ["errors"], messages=True)["panels"]["errors"]
    assert rows(messages) == [
        {"error_type": "OOM", "message": "OOM happened", "calls": 2, "share": 66.67},
        {"error_type": "Timeout", "message": "Timeout happened", "calls": 1, "share": 33.33},
    ]
    # A 2-day range is drawn per hour.
    assert p["failure_rate"]["bucket"] == "hour"
    fr = {r["time"]: r for r in rows(p["failure_rate"])}
    assert fr["2026-01-06T02:00:00+00:00"] == {"time": "2026-01-06T02:00:00+00:00", "calls": 2, "failures": 2,
                                              "failure_rate": 100.0}
    st = {r["time"]: r for r in rows(p["stages"])}
    assert st["2026-01-05T09:00:00+00:00"]["gpt_gen"] == 500.0 and st["2026-01-05T09:00:00+00:00"]["bigvgan"] is None
    scatter = rows(p["latency_vs_length"])
    assert len(scatter) == 6 and scatter[0] == {"text_length": 150, "latency_ms": 600.0, "status": "failed"}
    pct = {r["time"]: r for r in rows(p["percentiles"])}
    assert pct["2026-01-05T09:00:00+00:00"]["p50"] == pytest.approx(100, rel=0.01)
    assert pct["2026-01-05T09:00:00+00:00"]["p99"] == pytest.approx(200, rel=0.01)


def test_filters(store):
    f = Filters(since=RANGE.since, until=RANGE.until, node=("n2",))
    (s,) = rows(dashboard(store, f, ["summary"])["panels"]["summary"])
    assert s["calls"] == 2 and s["mean_latency"] == 300.0
    # An emotion filter: percentiles come from raw events (no histogram is kept per emotion).
    f = Filters(since=RANGE.since, until=RANGE.until, emotion=("happy",), status=("failed",))
    p = dashboard(store, f)["panels"]
    (s,) = rows(p["summary"])
    assert s["calls"] == 2 and s["p50_latency"] == pytest.approx(600, rel=0.01)
    assert [r[0] for r in p["errors"]["rows"]] == ["OOM", "Timeout"]
    # status=success leaves no error.
    p = dashboard(store, Filters(since=RANGE.since, until=RANGE.until, status=("success",)))["panels"]
    assert p["errors"]["empty"] and p["errors"]["rows"] == []
    opts = filter_options(store, RANGE)
    assert opts["node"] == ["n1", "n2"] and opts["emotion"] == ["happy", "sad"] and opts["model_version"] == ["1", "2"]


def test_time_zones(store):
    # 23:30 UTC on Jan 5 is Jan 6 in Shanghai (+8); in New York (-5) every call is on Jan 5.
    sh = dashboard(store, Filters(since=RANGE.since, until=RANGE.until, tz="Asia/Shanghai"), ["daily", "heatmap"])
    daily = {r[0]: r[1] for r in sh["panels"]["daily"]["rows"]}
    assert daily == {"2026-01-05": 3, "2026-01-06": 4, "2026-01-07": 0}
    cells = {(r[0], r[1]): r[2] for r in sh["panels"]["heatmap"]["rows"]}
    assert cells[(0, 17)] == 2 and cells[(1, 7)] == 1  # Monday 17:00 and Tuesday 07:30 local
    ny = dashboard(store, Filters(since=RANGE.since, until=RANGE.until, tz="America/New_York"), ["daily", "hourly"])
    daily = {r[0]: r[1] for r in ny["panels"]["daily"]["rows"]}
    assert daily == {"2026-01-04": 0, "2026-01-05": 7, "2026-01-06": 0}  # all before 19:00 local
    assert ny["panels"]["hourly"]["rows"][0][0] == "2026-01-04T19:00:00-05:00"


def test_daylight_saving_days(db_url):
    # Europe/Berlin leaves summer time on 2026-10-25: that local day has 25 hours.
    start = datetime(2026, 10, 24, 22, tzinfo=UTC)  # 2026-10-25 00:00 CEST
    recs = [ev(i, h, day=start, latency=100 + h) for i, h in enumerate(range(0, 25))]  # every hour of the day
    recs.append(ev(99, 25, day=start))  # 2026-10-26 00:00 CET
    with Store.open(db_url) as s:
        s.write(EventBatch.from_records(recs))
        f = Filters(since=start - timedelta(days=2), until=start + timedelta(days=3), tz="Europe/Berlin")
        daily = {r[0]: r[1] for r in dashboard(s, f, ["daily"])["panels"]["daily"]["rows"]}
    assert daily["2026-10-25"] == 25 and daily["2026-10-26"] == 1 and daily["2026-10-24"] == 0


def test_empty_range_says_so(db_url):
    with Store.open(db_url) as s:
        d = dashboard(s, Filters.last("7d"))
        for name, panel in d["panels"].items():
            assert panel["empty"], name
            assert set(panel) >= {"columns", "units", "rows", "empty"}
        assert rows(d["panels"]["summary"])[0]["calls"] == 0
        assert len(d["panels"]["daily"]["rows"]) in (7, 8) and all(r[1] == 0 for r in d["panels"]["daily"]["rows"])
        assert filter_options(s, Filters.last("7d"))["node"] == []


def test_single_panel_and_unknown_panel(store):
    panel = PANELS["by_emotion"](store, RANGE)
    assert panel["rows"][0][0] == "happy"
    with pytest.raises(ValueError, match="unknown panel"):
        dashboard(store, RANGE, ["nope"])


def test_emotion_filter_with_partial_days(store):
    """Daily emotion histograms plus raw events for the partial days at both ends."""
    f = Filters(since=DAY1 + timedelta(hours=9, minutes=10), until=DAY1 + timedelta(days=2, hours=1),
                emotion=("happy", "sad"))
    p = dashboard(store, f, ["summary", "by_node"])["panels"]
    (s,) = rows(p["summary"])
    # Day 1 from 09:00 (raw events): r1..r4; day 2 whole (daily histogram): r6, r7. 100..400, 600, 700.
    assert s["calls"] == 6 and s["p50_latency"] == pytest.approx(300, rel=0.01)
    f = Filters(since=DAY1, until=DAY1 + timedelta(days=2), emotion=("happy",), node=("n1",))
    (s,) = rows(dashboard(store, f, ["summary"])["panels"]["summary"])
    assert s["calls"] == 3 and s["p50_latency"] == pytest.approx(600, rel=0.01)  # 100, 600, 700
