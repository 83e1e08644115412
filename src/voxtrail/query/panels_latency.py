"""Latency distribution panels: percentiles over time, latency against text length, top errors."""

from __future__ import annotations

import polars as pl

from voxtrail.query.buckets import all_buckets, auto_unit, bucket_label
from voxtrail.query.reads import Reader
from voxtrail.query.stats import PERCENTILES, percentiles as compute_percentiles

#: Points of the latency-vs-length scatter: the most recent calls of the view. A bounded sample
#: of real calls (hoverable, exact values) at a cost that does not grow with the range: the
#: newest rows are read backwards along the ts index. Its bias is recency, stated in the output.
SCATTER_POINTS = 2000
TOP_ERRORS = 10


def percentiles(reader: Reader) -> dict:
    f = reader.filters
    unit = auto_unit(f)
    pct = compute_percentiles(reader.latency((), unit), ["bucket"])
    keys = pl.DataFrame({"bucket": all_buckets(f, unit)}, schema={"bucket": pl.Int64})
    frame = keys.join(pct, on="bucket", how="left")
    zone = f.zone
    frame = frame.with_columns(
        pl.col("bucket").map_elements(lambda k: bucket_label(k, unit, zone), return_dtype=pl.Utf8).alias("time"))
    names = ["time", *PERCENTILES]
    return {
        "columns": names,
        "units": {"time": None, **{k: "ms" for k in PERCENTILES}},
        "rows": frame.select(names).rows(),
        "bucket": unit,
        "tz": f.tz,
        "empty": pct.height == 0,
    }


def latency_vs_length(reader: Reader) -> dict:
    sample = reader.sample(SCATTER_POINTS)
    return {
        "columns": ["text_length", "latency_ms", "status"],
        "units": {"text_length": "characters", "latency_ms": "ms", "status": None},
        "rows": sample.rows(),
        "sample": "latest",
        "limit": SCATTER_POINTS,
        "empty": sample.height == 0,
    }


def errors(reader: Reader) -> dict:
    """Top error types: an aggregate, for every reader (no text of any event)."""
    return _top_errors(reader, ["error_type"])


def error_messages(reader: Reader) -> dict:
    """Top error types with the first characters of their messages: text (an error message can
    quote what a user asked), for auditors, who read it logged, and the command line."""
    return _top_errors(reader, ["error_type", "message_prefix"])


def _top_errors(reader: Reader, keys: list[str]) -> dict:
    frame = reader.errors()
    total = int(frame["calls"].sum()) if frame.height else 0
    frame = frame.group_by(keys).agg(pl.col("calls").sum())
    frame = frame.sort(["calls", *keys], descending=[True] + [False] * len(keys)).head(TOP_ERRORS)
    none_if_empty = {"error_type": "error_type", "message_prefix": "message"}
    frame = frame.with_columns(
        *(pl.when(pl.col(k) == "").then(None).otherwise(pl.col(k)).alias(none_if_empty[k]) for k in keys),
        (pl.col("calls") / total * 100).round(2).alias("share") if total else pl.lit(None).alias("share"),
    )
    names = [none_if_empty[k] for k in keys] + ["calls", "share"]
    return {
        "columns": names,
        "units": {**{name: None for name in names[:-2]}, "calls": "calls", "share": "%"},
        "rows": frame.select(names).rows(),
        "failures": total,
        "empty": total == 0,
    }
