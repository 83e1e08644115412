"""PostgreSQL's two insert paths: COPY straight into tts_events, and the staging table after a
duplicate. Whichever path a batch takes, the store holds each request_id once and the rollups
count exactly the inserted rows."""

from __future__ import annotations

import polars as pl
import pytest
import sqlalchemy as sa

from voxtrail.event import EventBatch
from voxtrail.store import Store
from voxtrail.store import bulk_postgresql
from voxtrail.store.schema import tts_events

from test_rollups import month, raw_hour_counts, rollup_hour_counts, snapshot


@pytest.fixture
def pg_url(fresh_db_url) -> str:
    return fresh_db_url("postgresql")


def paths(monkeypatch) -> list[str]:
    """Record which path each write took."""
    taken: list[str] = []
    writer = bulk_postgresql.WRITER
    direct, staged = writer._copy_direct, writer._insert_staged

    def spy_direct(conn, batch):
        ok = direct(conn, batch)
        taken.append("direct" if ok else "direct-refused")
        return ok

    def spy_staged(conn, batch):
        taken.append("staged")
        return staged(conn, batch)

    monkeypatch.setattr(writer, "_copy_direct", spy_direct)
    monkeypatch.setattr(writer, "_insert_staged", spy_staged)
    monkeypatch.setattr(writer, "_staged_left", 0)
    return taken


def test_fresh_batches_go_direct_and_duplicates_fall_back(pg_url, monkeypatch):
    taken = paths(monkeypatch)
    batches = month(events=3000)
    with Store.open(pg_url) as store:
        for b in batches:
            assert store.write(b).inserted == b.frame.height
        assert taken == ["direct"] * len(batches)
        before = snapshot(store)

        # Half stored, half new: the direct COPY is refused and rolled back entirely, the
        # staging path inserts only the new half.
        extra = month(events=1000, seed=9, chunk=1000)[0].frame
        mixed = EventBatch(pl.concat([batches[0].frame.head(500), extra], how="diagonal_relaxed"),
                           constants=batches[0].constants)
        result = store.write(mixed)
        assert (result.inserted, result.duplicates) == (1000, 500)
        assert taken[-2:] == ["direct-refused", "staged"]
        assert sum(raw_hour_counts(store).values()) == 4000
        assert rollup_hour_counts(store) == raw_hour_counts(store)
        with store.engine.connect() as conn:
            ids = conn.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(tts_events.c.request_id)))).one()
        assert ids == (4000, 4000)

        # After a refusal the next batches are staged straight away, then direct is tried again.
        taken.clear()
        for _ in range(bulk_postgresql.STAGED_AFTER_DUPLICATE):
            assert store.write(batches[1]).inserted == 0
        assert taken == ["staged"] * bulk_postgresql.STAGED_AFTER_DUPLICATE
        fresh = month(events=500, seed=11, chunk=500)[0]
        assert store.write(fresh).inserted == 500
        assert taken[-1] == "direct"
        assert sum(raw_hour_counts(store).values()) == 4500
        assert rollup_hour_counts(store) == raw_hour_counts(store)
        assert snapshot(store) != before


def test_duplicates_inside_one_batch(pg_url, monkeypatch):
    """A batch naming one request_id twice stores it once (the direct COPY cannot)."""
    taken = paths(monkeypatch)
    batch = month(events=1000, chunk=1000)[0]
    doubled = EventBatch(pl.concat([batch.frame, batch.frame.head(10)]), constants=batch.constants)
    with Store.open(pg_url) as store:
        result = store.write(doubled)
        assert (result.inserted, result.duplicates) == (1000, 10)
        assert taken == ["direct-refused", "staged"]
        assert rollup_hour_counts(store) == raw_hour_counts(store)
