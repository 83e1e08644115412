"""Rollups: exactly the inserted rows, on every dialect, under concurrency, and equal to raw answers."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
import sqlalchemy as sa

from voxtrail.demo.synthetic import SyntheticMonth, generate
from voxtrail.event import EventBatch
from voxtrail.query.filters import Filters
from voxtrail.query.panels import dashboard
from voxtrail.store import rollups
from voxtrail.store.api import Store
from voxtrail.store.migrate import alembic_config
from voxtrail.store.schema import ROLLUP_TABLES, rollup_tables, tts_events

END = datetime(2026, 2, 1, tzinfo=timezone.utc)


def month(events=4000, seed=1, chunk=1000, days=3) -> list[EventBatch]:
    return list(generate(SyntheticMonth(events=events, days=days, end=END, seed=seed, chunk_size=chunk, texts=False)))


def snapshot(store: Store) -> dict[str, list[tuple]]:
    out = {}
    with store.engine.connect() as conn:
        for name in ROLLUP_TABLES:
            table = rollup_tables[name]
            rows = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
            out[name] = [tuple(float(f"{v:.9g}") if isinstance(v, float) else (int(v) if hasattr(v, "as_integer_ratio") and not isinstance(v, float) else v) for v in r) for r in rows]
    return out


def raw_hour_counts(store: Store) -> dict[int, int]:
    with store.engine.connect() as conn:
        hour = rollups.epoch_hour(tts_events.c.ts)
        return dict(conn.execute(sa.select(hour, sa.func.count()).group_by(hour)).all())


def rollup_hour_counts(store: Store) -> dict[int, int]:
    t = rollup_tables["voxtrail_rollup_hourly"]
    with store.engine.connect() as conn:
        return {h: int(c) for h, c in conn.execute(sa.select(t.c.hour, sa.func.sum(t.c.calls)).group_by(t.c.hour))}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_batch_path_and_sql_path_agree(fresh_db_url, monkeypatch, dialect):
    batches = month()
    fast = Store.open(fresh_db_url(dialect))
    slow = Store.open(fresh_db_url(dialect))
    try:
        for b in batches:
            fast.write(b)
        monkeypatch.setattr(rollups, "batch_delta", lambda prepared: None)  # every write takes the SQL path
        for b in batches:
            slow.write(b)
        assert snapshot(fast) == snapshot(slow)
    finally:
        fast.close()
        slow.close()


def test_duplicates_are_not_counted_twice(db_url):
    batches = month(events=3000)
    with Store.open(db_url) as store:
        for b in batches:
            store.write(b)
        before = snapshot(store)
        for b in batches:  # a second delivery of everything
            assert store.write(b).inserted == 0
        assert snapshot(store) == before
        # Half old, half new rows in one batch: only the new half is added (SQL path).
        extra = month(events=1000, seed=9, chunk=1000)[0].frame
        mixed = EventBatch(pl.concat([batches[0].frame.head(500), extra], how="diagonal_relaxed"),
                           constants=batches[0].constants)
        result = store.write(mixed)
        assert (result.inserted, result.duplicates) == (1000, 500)
        assert rollup_hour_counts(store) == raw_hour_counts(store)
        assert sum(raw_hour_counts(store).values()) == 4000


def test_concurrent_writers(db_url):
    """Two stores writing overlapping batches at once: every event counted exactly once."""
    batches = month(events=6000, chunk=500)
    errors: list[BaseException] = []

    def writer(order):
        try:
            with Store.open(db_url) as store:
                for b in order:
                    store.write(b)
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the test's thread
            errors.append(exc)

    Store.open(db_url).close()  # migrate once before the race
    threads = [threading.Thread(target=writer, args=(batches,)), threading.Thread(target=writer, args=(batches[::-1],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Store.open(db_url) as store:
        assert store.count() == 6000
        assert rollup_hour_counts(store) == raw_hour_counts(store)


def exact_percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered)) - 1]


def test_rollup_answers_match_raw(db_url):
    batches = month(events=8000, days=4, chunk=2000)
    frame = pl.concat([b.frame for b in batches], how="vertical_relaxed")
    with Store.open(db_url) as store:
        for b in batches:
            store.write(b)
        f = Filters(since=END - timedelta(days=4), until=END)
        panels = dashboard(store, f)["panels"]
    (summary,) = panels["summary"]["rows"]
    s = dict(zip(panels["summary"]["columns"], summary))
    lat = frame["latency_ms"].drop_nulls().to_list()
    assert s["calls"] == frame.height
    assert s["failures"] == frame.filter(pl.col("status") == "failed").height
    assert s["mean_latency"] == pytest.approx(round(sum(lat) / len(lat), 1), abs=0.051)
    assert s["p50_latency"] == pytest.approx(exact_percentile(lat, 0.5), rel=0.01)
    assert s["p95_latency"] == pytest.approx(exact_percentile(lat, 0.95), rel=0.01)
    # Percentiles per day (a 4-day range is drawn per day).
    days = frame.with_columns(pl.col("ts").dt.date().cast(pl.Utf8).alias("day"))
    for row in panels["percentiles"]["rows"]:
        values = days.filter(pl.col("day") == row[0])["latency_ms"].drop_nulls().to_list()
        for value, p in zip(row[1:], (0.5, 0.9, 0.95, 0.99)):
            assert value == pytest.approx(exact_percentile(values, p), rel=0.01), (row[0], p)
    # Per model version: calls and means exact, p95 within 1 %.
    for row in panels["by_model"]["rows"]:
        r = dict(zip(panels["by_model"]["columns"], row))
        sub = frame.filter(pl.col("model_version") == r["model_version"])
        vals = sub["latency_ms"].drop_nulls().to_list()
        assert r["calls"] == sub.height
        assert r["mean_latency"] == pytest.approx(sum(vals) / len(vals), abs=0.051)
        assert r["p95_latency"] == pytest.approx(exact_percentile(vals, 0.95), rel=0.01)
    # Per emotion, and the mean RTF per day.
    for row in panels["by_emotion"]["rows"]:
        sub = frame.filter(pl.col("emotion").is_null() if row[0] is None else pl.col("emotion") == row[0])
        assert row[1] == sub.height
        assert row[2] == pytest.approx(sub["latency_ms"].mean(), abs=0.051)
    for row in panels["rtf_audio"]["rows"]:
        sub = days.filter(pl.col("day") == row[0])
        assert row[1] == pytest.approx(sub["rtf"].mean(), abs=0.0006)


def test_filtered_percentiles_match_raw(sqlite_url):
    batches = month(events=6000, days=2, chunk=3000)
    frame = pl.concat([b.frame for b in batches], how="vertical_relaxed")
    with Store.open(sqlite_url) as store:
        for b in batches:
            store.write(b)
        for params in ({"node": ("tts-a",)}, {"emotion": ("happy",), "node": ("tts-b",)}, {"status": ("failed",)}):
            f = Filters(since=END - timedelta(days=2), until=END, **params)
            (row,) = dashboard(store, f, ["summary"])["panels"]["summary"]["rows"]
            sub = frame
            for name, values in params.items():
                sub = sub.filter(pl.col(name).is_in(list(values)))
            lat = sub["latency_ms"].drop_nulls().to_list()
            assert row[0] == sub.height
            assert row[4] == pytest.approx(exact_percentile(lat, 0.5), rel=0.01)
            assert row[5] == pytest.approx(exact_percentile(lat, 0.95), rel=0.01)


def test_rebuild_and_migration_backfill(db_url):
    batches = month(events=2500)
    with Store.open(db_url) as store:
        for b in batches:
            store.write(b)
        expected = snapshot(store)
        with store.engine.begin() as conn:
            for table in rollup_tables.values():
                conn.execute(sa.delete(table))
        assert rollups.rebuild(store.engine, store.dialect) == 3  # the UTC days holding events
        assert snapshot(store) == expected
        # Back to schema 0002 (rollup tables dropped), then reopen: the upgrade rolls up the events.
        from alembic import command

        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0002")
    with Store.open(db_url) as store:
        assert snapshot(store) == expected


def test_rebuild_command(sqlite_url):
    from click.testing import CliRunner

    from voxtrail.cli import app

    with Store.open(sqlite_url) as store:
        for b in month(events=1000):
            store.write(b)
        expected = snapshot(store)
    result = CliRunner().invoke(app, ["rollup", "rebuild", "--db", sqlite_url, "--json"])
    assert result.exit_code == 0, result.output
    assert '"days": ' in result.output
    with Store.open(sqlite_url) as store:
        assert snapshot(store) == expected
    result = CliRunner().invoke(app, ["rollup", "rebuild", "--db", sqlite_url, "--since", "yesterday"])
    assert result.exit_code != 0 and "--since" in result.output
