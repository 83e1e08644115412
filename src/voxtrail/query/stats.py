"""Figures from summed rollup columns: means, rates and percentiles, with display rounding.

All operate on polars frames returned by :mod:`voxtrail.query.reads` and add columns, so a
panel is "read, add figures, pick columns". Rounding happens here, once: latency and stage
times to 0.1 ms, rates to 0.01 %, RTF to 0.001, audio lengths to 0.01 s.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from voxtrail.store.rollups import bin_value

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
DIGITS = {"ms": 1, "%": 2, "x": 3, "s": 2}


def mean(field: str, unit: str = "ms", scale: float = 1.0) -> pl.Expr:
    """Mean of ``field`` from its ``_sum`` / ``_n`` columns (null when no value was recorded)."""
    n, total = pl.col(f"{field}_n"), pl.col(f"{field}_sum")
    return pl.when(n > 0).then((total / n * scale).round(DIGITS[unit])).otherwise(None)


def collapse_status(frame: pl.DataFrame, by: list[str], measures: tuple[str, ...] = ()) -> pl.DataFrame:
    """Sum a frame grouped by ``by + [status]`` over status: calls, failures, success_rate, sums."""
    ok = pl.when(pl.col("status") == "success").then(pl.col("calls")).otherwise(0)
    failed = pl.when(pl.col("status") == "failed").then(pl.col("calls")).otherwise(0)
    sums = [pl.col(f"{m}_{p}").sum() for m in measures for p in ("n", "sum")]
    aggs = [pl.col("calls").sum(), ok.sum().alias("ok"), failed.sum().alias("failures"), *sums]
    out = frame.group_by(by, maintain_order=True).agg(aggs) if by else frame.select(aggs)
    return out.with_columns(
        pl.when(pl.col("calls") > 0).then((pl.col("ok") / pl.col("calls") * 100).round(2)).alias("success_rate"),
        pl.when(pl.col("calls") > 0).then((pl.col("failures") / pl.col("calls") * 100).round(2)).alias("failure_rate"),
    )


def percentiles(hist: pl.DataFrame, by: list[str], which: dict[str, float] = PERCENTILES) -> pl.DataFrame:
    """Nearest-rank percentiles (value at rank ceil(p * n)) per group of a latency histogram."""
    schema = {**{b: hist.schema[b] for b in by}, **{k: pl.Float64 for k in which}}
    if hist.height == 0:
        return pl.DataFrame(schema=schema)
    counts = hist.group_by([*by, "bin"]).agg(pl.col("calls").sum()).sort([*by, "bin"])
    bins = counts["bin"].to_numpy()
    cum_all = counts["calls"].to_numpy().astype(np.int64)
    if by:
        groups = counts.with_row_index("i").group_by(by, maintain_order=True).agg(
            pl.col("i").first().alias("start"), pl.len().alias("n"))
        spans = [(tuple(r[:-2]), r[-2], r[-1]) for r in groups.rows()]
    else:
        spans = [((), 0, counts.height)]
    rows = []
    for key, start, n in spans:
        cum = np.cumsum(cum_all[start:start + n])
        picked = [bins[start + int(np.searchsorted(cum, math.ceil(p * cum[-1])))] for p in which.values()]
        rows.append((*key, *(round(bin_value(int(b)), DIGITS["ms"]) for b in picked)))
    return pl.DataFrame(rows, schema=schema, orient="row")


def clean(value):
    """JSON-friendly scalars: NaN/inf become None, numpy/polars scalars become Python."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
