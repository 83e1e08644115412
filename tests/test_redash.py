"""docs/redash.md: every query runs on the databases it is written for, and its figures are right."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import polars as pl
import pytest
import sqlalchemy as sa

from test_docs import run_sql_examples, sql_examples
from voxtrail.demo.synthetic import SyntheticMonth, generate
from voxtrail.store.api import Store

END = datetime(2026, 4, 1, tzinfo=timezone.utc)


@pytest.fixture
def loaded(db_url):
    batches = list(generate(SyntheticMonth(events=3000, days=3, end=END, chunk_size=1500)))
    store = Store.open(db_url)
    for b in batches:
        store.write(b)
    yield store, pl.concat([b.frame for b in batches], how="vertical_relaxed")
    store.close()


def test_every_redash_query_runs(loaded):
    store, _ = loaded
    assert len(sql_examples("redash.md")) >= 15
    assert run_sql_examples(store, "redash.md") >= 12


def test_seed_queries_and_rollup_percentiles_are_right(loaded):
    store, frame = loaded
    examples = [sql for dialects, sql in sql_examples("redash.md") if dialects is None]
    daily = next(sql for sql in examples if "total_calls" in sql)
    p95 = next(sql for sql in examples if "voxtrail_latency_daily_totals" in sql)
    days = frame.with_columns(pl.col("ts").dt.date().alias("day"))
    with store.engine.connect() as conn:
        got = {str(r[0])[:10]: r for r in conn.execute(sa.text(daily))}
        for day, sub in days.group_by("day"):
            row = got[str(day[0])]
            assert row[1] == sub.height
            assert float(row[2]) == pytest.approx(sub["latency_ms"].mean() / 1000, rel=1e-9)
        epoch = datetime(1970, 1, 1).date()
        for day_number, value in conn.execute(sa.text(p95)):
            day = epoch.toordinal() + int(day_number)
            values = sorted(days.filter(pl.col("day").map_elements(lambda d: d.toordinal(), return_dtype=pl.Int64) == day)
                            ["latency_ms"].drop_nulls().to_list())
            exact = values[math.ceil(0.95 * len(values)) - 1]
            assert float(value) == pytest.approx(exact, rel=0.01)
