"""query/events.py: the auditors' event list and detail, on SQLite, PostgreSQL and MySQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from voxtrail.event import EventBatch
from voxtrail.query import events as q
from voxtrail.store import Store

T0 = datetime(2026, 3, 2, 8, 0, 0)


@dataclass
class F:
    """The attributes of query.filters.Filters that the event list reads."""

    since: datetime | None = None
    until: datetime | None = None
    node: tuple = ()
    model: tuple = ()
    model_version: tuple = ()
    emotion: tuple = ()
    emotion_control: tuple = ()
    status: tuple = ()


def records(n: int = 30) -> list[dict]:
    out = []
    for i in range(n):
        out.append({
            "request_id": f"req-{i:03d}",
            # two events share each timestamp: pagination must order ties by id, not lose them
            "ts": T0 + timedelta(minutes=i // 2),
            "status": "failed" if i % 5 == 0 else "success",
            "emotion": ["happy", "sad", "愤怒"][i % 3],
            "emotion_control": "vector" if i % 2 else "text",
            "latency_ms": 1000.0 + i,
            "text_length": 10 + i,
            "user_id": f"u{i % 4}",
            "text_input": (f"Hello 100% real_text number {i} ") * (1 if i % 7 else 10),
            "node": f"gpu-{i % 2}",
            "model": "IndexTTS2",
            "model_version": "2.0" if i < 20 else "2.1",
            "emotion_vector": json.dumps([0.1] * 8),
            "attributes": json.dumps({"k": i}),
            "source": "http",
        })
    return out


@pytest.fixture
def store(db_url):
    with Store.open(db_url) as s:
        s.write(EventBatch.from_records(records()))
        yield s


def all_pages(engine, filters, **kw) -> list[dict]:
    rows, cursor = [], None
    while True:
        page = q.list_events(engine, filters, cursor=cursor, **kw)
        rows += page.rows
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


def test_pages_cover_every_event_once_newest_first(store):
    rows = all_pages(store.engine, F(), limit=7)
    ids = [r["request_id"] for r in rows]
    assert sorted(ids) == [f"req-{i:03d}" for i in range(30)]
    assert len(set(ids)) == 30
    ts = [r["ts"] for r in rows]
    assert ts == sorted(ts, reverse=True)
    first = q.list_events(store.engine, F(), limit=7)
    assert first.total == 30 and not first.total_capped and len(first.rows) == 7
    assert list(first.rows[0]) == list(q.LIST_COLUMNS)


def test_filters_time_range_and_user(store):
    f = F(since=(T0 + timedelta(minutes=5)).replace(tzinfo=timezone.utc),
          until=(T0 + timedelta(minutes=10)).replace(tzinfo=timezone.utc),
          status=("success",), node=("gpu-1",))
    rows = all_pages(store.engine, f)
    want = [i for i in range(10, 20) if i % 5 and i % 2 == 1]
    assert sorted(r["request_id"] for r in rows) == [f"req-{i:03d}" for i in want]
    rows = all_pages(store.engine, F(emotion=("愤怒",), model_version=("2.1",)), user="u2")
    assert sorted(r["request_id"] for r in rows) == [f"req-{i:03d}" for i in range(20, 30) if i % 3 == 2 and i % 4 == 2]


def test_search_is_case_insensitive_substring_with_wildcards_taken_literally(store):
    rows = all_pages(store.engine, F(), search="NUMBER 7 ")
    assert [r["request_id"] for r in rows] == ["req-007"]
    # "100%" is literal: every text has it; "0%r" would match "100% real" only as a wildcard
    assert len(all_pages(store.engine, F(), search="100% real_text")) == 30
    assert all_pages(store.engine, F(), search="0%r") == []
    assert all_pages(store.engine, F(), search="real_tex_") == []


def test_excerpt_is_cut_with_an_ellipsis(store):
    rows = {r["request_id"]: r for r in all_pages(store.engine, F())}
    assert rows["req-007"]["text_excerpt"].endswith("…")
    assert len(rows["req-007"]["text_excerpt"]) == q.EXCERPT_CHARS + 1
    assert rows["req-001"]["text_excerpt"] == "Hello 100% real_text number 1 "


def test_detail_has_every_field(store):
    event = q.get_event(store.engine, "req-021")
    assert event["text_input"] == "Hello 100% real_text number 21 " * 10
    assert event["emotion_vector"] == [0.1] * 8 and event["attributes"] == {"k": 21}
    assert event["model_version"] == "2.1" and event["source"] == "http"
    assert event["ingested_at"] is not None
    data = q.jsonable(event)
    assert data["ts"] == "2026-03-02T08:10:00.000000Z"
    assert q.get_event(store.engine, "nope") is None


def test_bad_cursor_limit_and_search_are_value_errors(store):
    with pytest.raises(ValueError, match="cursor"):
        q.list_events(store.engine, F(), cursor="garbage!")
    with pytest.raises(ValueError, match="limit"):
        q.list_events(store.engine, F(), limit=0)
    with pytest.raises(ValueError, match="search"):
        q.list_events(store.engine, F(), search="x" * 500)


def test_count_is_capped(sqlite_url, monkeypatch):
    monkeypatch.setattr(q, "COUNT_CAP", 10)
    with Store.open(sqlite_url) as s:
        s.write(EventBatch.from_records(records(25)))
        page = q.list_events(s.engine, F(), limit=5)
    assert (page.total, page.total_capped) == (10, True)


def test_a_cursor_never_widens_the_range(store):
    """A cursor is a position; the filters' until still bounds the page (whichever is lower)."""
    first = q.list_events(store.engine, F(), limit=4)  # newest four: minutes 14 and 13
    until = (T0 + timedelta(minutes=5)).replace(tzinfo=timezone.utc)
    narrow = q.list_events(store.engine, F(until=until), cursor=first.next_cursor, limit=100)
    assert sorted(r["request_id"] for r in narrow.rows) == [f"req-{i:03d}" for i in range(10)]
    old = q.list_events(store.engine, F(), limit=26).next_cursor  # position: minute 2
    wide = q.list_events(store.engine, F(until=until), cursor=old, limit=100)
    assert sorted(r["request_id"] for r in wide.rows) == [f"req-{i:03d}" for i in range(4)]
