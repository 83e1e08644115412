"""Panels over time: daily, hourly, failure_rate, rtf_audio, stages, and the weekday x hour heatmap.

They all read one answer, the measures grouped by status and a time bucket, from the smallest
rollup (``voxtrail_rollup_hourly_totals`` when no dimension filter is set).
"""

from __future__ import annotations

import polars as pl

from voxtrail.query.buckets import all_buckets, auto_unit, bucket_label, local_weekday_hour
from voxtrail.query.reads import Reader
from voxtrail.query.stats import collapse_status, mean
from voxtrail.store.schema import ROLLUP_MEASURES

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def over_time(reader: Reader, unit: str) -> pl.DataFrame:
    """One row per bucket of the view (zeros where nothing happened), every measure summed.

    Computed once per view and unit: five panels draw from it."""
    return reader.derived(("over_time", unit), lambda: _over_time(reader, unit))


def _over_time(reader: Reader, unit: str) -> pl.DataFrame:
    frame = collapse_status(reader.measures(("status",), unit), ["bucket"], ROLLUP_MEASURES)
    keys = pl.DataFrame({"bucket": all_buckets(reader.filters, unit)}, schema={"bucket": pl.Int64})
    frame = keys.join(frame, on="bucket", how="left").with_columns(
        pl.col(pl.Int64).exclude("bucket").fill_null(0),
        pl.col("^.*_sum$").fill_null(0.0),
    )
    zone = reader.filters.zone
    return frame.with_columns(
        pl.col("bucket").map_elements(lambda k: bucket_label(k, unit, zone), return_dtype=pl.Utf8).alias("time")
    )


def _series(reader: Reader, unit: str, columns: dict[str, pl.Expr], units: dict[str, str]) -> dict:
    frame = over_time(reader, unit).with_columns(**columns)
    names = ["time", *columns]
    return {
        "columns": names,
        "units": {"time": None, **units},
        "rows": frame.select(names).rows(),
        "bucket": unit,
        "tz": reader.filters.tz,
        "empty": int(frame["calls"].sum()) == 0,
    }


def _calls_success_latency(reader: Reader, unit: str) -> dict:
    return _series(
        reader, unit,
        {"calls": pl.col("calls"), "success_rate": pl.col("success_rate"), "mean_latency": mean("latency_ms")},
        {"calls": "calls", "success_rate": "%", "mean_latency": "ms"},
    )


def daily(reader: Reader) -> dict:
    return _calls_success_latency(reader, "day")


def hourly(reader: Reader) -> dict:
    return _calls_success_latency(reader, "hour")


def failure_rate(reader: Reader) -> dict:
    return _series(
        reader, auto_unit(reader.filters),
        {"calls": pl.col("calls"), "failures": pl.col("failures"), "failure_rate": pl.col("failure_rate")},
        {"calls": "calls", "failures": "calls", "failure_rate": "%"},
    )


def rtf_audio(reader: Reader) -> dict:
    return _series(
        reader, auto_unit(reader.filters),
        {"mean_rtf": mean("rtf", "x"), "mean_audio_length": mean("audio_length_ms", "s", 0.001),
         "total_audio": (pl.col("audio_length_ms_sum") / 1000).round(2)},
        {"mean_rtf": "x", "mean_audio_length": "s", "total_audio": "s"},
    )


STAGES = ("gpt_gen", "gpt_forward", "s2mel", "bigvgan")


def stages(reader: Reader) -> dict:
    return _series(
        reader, auto_unit(reader.filters),
        {name: mean(f"{name}_ms") for name in STAGES},
        {name: "ms" for name in STAGES},
    )


def heatmap(reader: Reader) -> dict:
    frame = reader.measures(("status",), "hour")  # the hourly panel's answer, shared
    zone = reader.filters.zone
    cells = {(d, h): 0 for d in range(7) for h in range(24)}
    for key, calls in frame.select("bucket", "calls").iter_rows():
        cells[local_weekday_hour(key, zone)] += calls
    return {
        "columns": ["weekday", "hour", "calls"],
        "units": {"weekday": None, "hour": None, "calls": "calls"},
        "rows": [[d, h, c] for (d, h), c in cells.items()],
        "weekdays": list(WEEKDAYS),
        "tz": reader.filters.tz,
        "empty": sum(cells.values()) == 0,
    }
