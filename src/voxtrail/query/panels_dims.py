"""Panels that compare groups: summary, by_emotion, by_text_length, by_node, by_model (A/B).

by_emotion, by_node and by_model share one answer (measures grouped by node, model, version,
emotion and status); percentiles per node and per model version come from the latency
histograms kept per node and model version.
"""

from __future__ import annotations

import polars as pl

from voxtrail.query.buckets import auto_unit
from voxtrail.query.reads import Reader
from voxtrail.query.stats import collapse_status, mean, percentiles
from voxtrail.store.rollups import LENGTH_BUCKETS

GROUPS = ("node", "model", "model_version", "emotion", "status")
MEASURES = ("latency_ms", "rtf", "audio_length_ms")


def _table(frame: pl.DataFrame, columns: dict[str, pl.Expr], units: dict[str, str | None]) -> dict:
    frame = frame.with_columns(**columns)
    names = list(columns)
    return {
        "columns": names,
        "units": units,
        "rows": frame.select(names).rows(),
        "empty": frame.height == 0 or int(frame["calls"].sum()) == 0,
    }


def _label(name: str) -> pl.Expr:
    """'' (no value recorded) shown as null."""
    return pl.when(pl.col(name) == "").then(None).otherwise(pl.col(name))


def summary(reader: Reader) -> dict:
    # The over-time panels' answers, summed over time: no extra read.
    unit = auto_unit(reader.filters)
    totals = collapse_status(reader.measures(("status",), unit), [], ("latency_ms", "rtf", "audio_length_ms"))
    pct = percentiles(reader.latency((), unit), [], {"p50": 0.5, "p95": 0.95})
    row = totals.row(0, named=True) if totals.height else {}
    calls = int(row.get("calls") or 0)
    frame = totals.with_columns(
        mean("latency_ms").alias("mean_latency"), mean("rtf", "x").alias("mean_rtf"),
        mean("audio_length_ms", "s", 0.001).alias("mean_audio_length"),
    )
    figures = frame.row(0, named=True) if frame.height and calls else {}
    p = pct.row(0, named=True) if pct.height else {}
    values = {
        "calls": calls,
        "failures": int(row.get("failures") or 0),
        "success_rate": figures.get("success_rate"),
        "mean_latency": figures.get("mean_latency"),
        "p50_latency": p.get("p50"),
        "p95_latency": p.get("p95"),
        "mean_rtf": figures.get("mean_rtf"),
        "mean_audio_length": figures.get("mean_audio_length"),
    }
    units = {"calls": "calls", "failures": "calls", "success_rate": "%", "mean_latency": "ms",
             "p50_latency": "ms", "p95_latency": "ms", "mean_rtf": "x", "mean_audio_length": "s"}
    return {"columns": list(values), "units": units, "rows": [list(values.values())], "empty": calls == 0}


def _grouped(reader: Reader, by: list[str]) -> pl.DataFrame:
    return collapse_status(reader.measures(GROUPS), by, MEASURES)


def by_emotion(reader: Reader) -> dict:
    frame = _grouped(reader, ["emotion"]).sort(["calls", "emotion"], descending=[True, False])
    return _table(
        frame,
        {"emotion": _label("emotion"), "calls": pl.col("calls"), "mean_latency": mean("latency_ms"),
         "success_rate": pl.col("success_rate")},
        {"emotion": None, "calls": "calls", "mean_latency": "ms", "success_rate": "%"},
    )


def by_text_length(reader: Reader) -> dict:
    """Seed 000's third query, plus the mean over all calls: its mean is over successful ones."""
    frame = reader.measures(("status", "length_bucket"))
    frame = frame.filter(pl.col("length_bucket") != "")
    ok = frame.filter(pl.col("status") == "success").group_by("length_bucket").agg(
        pl.col("latency_ms_n").sum().alias("ok_latency_n"), pl.col("latency_ms_sum").sum().alias("ok_latency_sum"))
    frame = collapse_status(frame, ["length_bucket"], ("latency_ms",)).join(ok, on="length_bucket", how="left")
    order = {name: i for i, name in enumerate(LENGTH_BUCKETS)}
    frame = frame.sort(pl.col("length_bucket").replace_strict(order, return_dtype=pl.Int64))
    success_mean = pl.when(pl.col("ok_latency_n") > 0).then(
        (pl.col("ok_latency_sum") / pl.col("ok_latency_n")).round(1))
    return _table(
        frame,
        {"length_bucket": pl.col("length_bucket"), "calls": pl.col("calls"),
         "success_rate": pl.col("success_rate"), "mean_latency": mean("latency_ms"),
         "mean_latency_success": success_mean},
        {"length_bucket": "characters", "calls": "calls", "success_rate": "%", "mean_latency": "ms",
         "mean_latency_success": "ms"},
    )


def _with_percentiles(reader: Reader, frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    pct = percentiles(reader.latency(tuple(by)), by, {"p50": 0.5, "p95": 0.95})
    return frame.join(pct, on=by, how="left")


def by_node(reader: Reader) -> dict:
    frame = _with_percentiles(reader, _grouped(reader, ["node"]), ["node"]).sort("node")
    return _table(
        frame,
        {"node": _label("node"), "calls": pl.col("calls"), "success_rate": pl.col("success_rate"),
         "mean_latency": mean("latency_ms"), "p95_latency": pl.col("p95"), "mean_rtf": mean("rtf", "x")},
        {"node": None, "calls": "calls", "success_rate": "%", "mean_latency": "ms", "p95_latency": "ms",
         "mean_rtf": "x"},
    )


def by_model(reader: Reader) -> dict:
    by = ["model", "model_version"]
    frame = _with_percentiles(reader, _grouped(reader, by), by).sort(by)
    return _table(
        frame,
        {"model": _label("model"), "model_version": _label("model_version"), "calls": pl.col("calls"),
         "success_rate": pl.col("success_rate"), "mean_latency": mean("latency_ms"),
         "p50_latency": pl.col("p50"), "p95_latency": pl.col("p95"), "mean_rtf": mean("rtf", "x")},
        {"model": None, "model_version": None, "calls": "calls", "success_rate": "%", "mean_latency": "ms",
         "p50_latency": "ms", "p95_latency": "ms", "mean_rtf": "x"},
    )
