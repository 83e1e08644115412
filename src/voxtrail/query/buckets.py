"""Time buckets in the display time zone, computed from UTC hour keys.

Rollups are keyed by whole UTC hours (hours since 1970). A local day is then a set of whole
UTC hours in every zone whose offset is a whole number of hours, DST included, so daily figures
in such a zone are exact: the bucket of UTC hour ``h`` is ``(h * 60 + offset_minutes(h)) // 1440``,
computed in SQL with a CASE over the offset changes inside the range (usually none, at most a
couple for DST). In zones with a half- or quarter-hour offset (India, Nepal, parts of Australia)
an hour is assigned to the local day its first minute falls in: day totals there may include up
to 45 minutes of a neighbouring day; hourly figures are exact everywhere.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from voxtrail.query.filters import Filters

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_DATE = date(1970, 1, 1)
#: Ranges up to this long are drawn per hour, longer ones per day.
HOURLY_UP_TO = timedelta(days=2)


def epoch_hours(t: datetime) -> int:
    return int((t - EPOCH).total_seconds() // 3600)


def hour_range(f: Filters) -> tuple[int, int]:
    """``[first, end)`` UTC hour keys of the view."""
    return epoch_hours(f.since), epoch_hours(f.until)


def auto_unit(f: Filters) -> str:
    return "hour" if f.span <= HOURLY_UP_TO else "day"


def offset_runs(f: Filters) -> list[tuple[int, int]]:
    """``[(first_hour, offset_minutes), ...]``: the zone's UTC offset over the view's hours."""
    zone = ZoneInfo(f.tz)
    first, end = hour_range(f)
    runs: list[tuple[int, int]] = []
    t = f.since
    for h in range(first, end):
        minutes = int(t.astimezone(zone).utcoffset().total_seconds() // 60)
        if not runs or runs[-1][1] != minutes:
            runs.append((h, minutes))
        t += timedelta(hours=1)
    return runs or [(first, 0)]


def is_utc_days(f: Filters) -> bool:
    """True when local days are UTC days over the whole view (daily rollups then apply)."""
    return all(minutes == 0 for _, minutes in offset_runs(f))


def day_bucket(hour: sa.ColumnElement, f: Filters) -> sa.ColumnElement:
    """SQL: the local day (days since 1970-01-01, local calendar) of UTC hour key ``hour``."""
    runs = offset_runs(f)
    if len(runs) == 1:
        offset: sa.ColumnElement = _int(runs[0][1])
    else:
        whens = [(hour < _int(start), _int(minutes)) for (_, minutes), (start, _) in zip(runs, runs[1:])]
        offset = sa.case(*whens, else_=_int(runs[-1][1]))
    return (hour * _int(60) + offset) // _int(1440)


def _int(n: int) -> sa.ColumnElement:
    # Inline, not bound: PostgreSQL must see the same text in SELECT and GROUP BY.
    return sa.literal_column(str(int(n)), sa.Integer())


def bucket_label(key: int, unit: str, zone: ZoneInfo) -> str:
    """``2026-11-01`` for a day key, local ISO time with offset for an hour key."""
    if unit == "day":
        return (EPOCH_DATE + timedelta(days=key)).isoformat()
    return (EPOCH + timedelta(hours=key)).astimezone(zone).isoformat()


def all_buckets(f: Filters, unit: str) -> list[int]:
    """Every bucket key of the view, in order (so charts show gaps as zeros, not jumps)."""
    first, end = hour_range(f)
    if unit == "hour":
        return list(range(first, end))
    runs = offset_runs(f)
    days: dict[int, None] = {}
    r = 0
    for h in range(first, end):
        while r + 1 < len(runs) and runs[r + 1][0] <= h:
            r += 1
        days[(h * 60 + runs[r][1]) // 1440] = None
    return list(days)


def local_weekday_hour(hour_key: int, zone: ZoneInfo) -> tuple[int, int]:
    local = (EPOCH + timedelta(hours=hour_key)).astimezone(zone)
    return local.weekday(), local.hour
