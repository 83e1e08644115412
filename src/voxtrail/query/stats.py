"""Figures from summed rollup columns: means, rates and percentiles, with display rounding.

All operate on polars frames returned by :mod:`voxtrail.query.reads` and add columns, so a
panel is "read, add figures, pick columns". Rounding happens here, once: latency and stage
times to 0.1 ms, rates to 0.01 %, RTF to 0.001, audio lengths to 0.01 s.
"""

from __future__ import annotations

import math

import polars as pl

from voxtrail.store.rollups import GAMMA, ZERO_BIN

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


def bin_values(bins: pl.Expr) -> pl.Expr:
    """The value each histogram bin stands for (within 1 % of every value in it)."""
    estimate = (pl.lit(GAMMA).log() * bins.cast(pl.Float64)).exp() * (2 * GAMMA / (1 + GAMMA))
    return pl.when(bins == ZERO_BIN).then(0.0).otherwise(estimate)


def percentiles(hist: pl.DataFrame, by: list[str], which: dict[str, float] = PERCENTILES) -> pl.DataFrame:
    """Nearest-rank percentiles (value at rank ceil(p * n)) per group of a latency histogram."""
    if hist.height == 0:
        return pl.DataFrame(schema={**{b: hist.schema[b] for b in by}, **{k: pl.Float64 for k in which}})
    counts = hist.group_by([*by, "bin"]).agg(pl.col("calls").sum()) if by else \
        hist.group_by("bin").agg(pl.col("calls").sum())
    counts = counts.sort([*by, "bin"])
    over = by or None
    cum = pl.col("calls").cum_sum().over(over) if over else pl.col("calls").cum_sum()
    total = pl.col("calls").sum().over(over) if over else pl.col("calls").sum()
    counts = counts.with_columns(cum.alias("cum"), total.alias("total"))
    out = None
    for name, p in which.items():
        rank = (pl.col("total") * p).ceil()
        picked = counts.filter(pl.col("cum") >= rank)
        picked = (picked.group_by(by, maintain_order=True).agg(pl.col("bin").first()) if by
                  else picked.select(pl.col("bin").first()))
        picked = picked.with_columns(bin_values(pl.col("bin")).round(DIGITS["ms"]).alias(name)).drop("bin")
        out = picked if out is None else (out.join(picked, on=by, how="left") if by else pl.concat([out, picked], how="horizontal"))
    return out


def clean(value):
    """JSON-friendly scalars: NaN/inf become None, numpy/polars scalars become Python."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
