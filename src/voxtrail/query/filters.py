"""What a view asks for: a time range, dimension filters and a display time zone.

The same :class:`Filters` drives the dashboard, the JSON API, ``voxtrail report`` and the
exports, and round-trips through URL parameters (:meth:`Filters.from_params` /
:meth:`Filters.to_params`) so that a view can be shared as a link.

URL parameters:

- ``range``: ``1h``, ``24h``, ``7d`` or ``30d`` (default ``24h``), ending now; or
- ``since`` / ``until``: ISO-8601 (``2026-11-01``, ``2026-11-01T08:00``, with or without an
  offset; without one the display time zone applies) or relative to now (``90m``, ``36h``,
  ``7d``, ``2w``). ``until`` defaults to now. ``since``/``until`` win over ``range``.
- ``node``, ``model``, ``model_version``, ``emotion``, ``emotion_control``, ``status``: a
  value to keep (repeat the parameter, or separate values with commas, to keep several).
- ``tz``: IANA time zone for day and hour buckets (default ``UTC``), e.g. ``Asia/Shanghai``.

Ranges are whole hours: ``since`` is rounded down and ``until`` up to the hour, so every figure
comes from the hourly rollups and a relative range always includes the current hour (``24h`` =
the current hour and the 23 before it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DIMENSIONS = ("node", "model", "model_version", "emotion", "emotion_control", "status")
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_RANGE = "24h"
_RELATIVE = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: No view goes back further than this (a typo such as since=20000d gets a clear error).
MAX_SPAN = timedelta(days=3660)


def floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    down = floor_hour(t)
    return down if down == t else down + timedelta(hours=1)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as UTC or Europe/Berlin)") from None


def parse_time(value: str, *, now: datetime, tz: ZoneInfo, name: str) -> datetime:
    """An ISO-8601 time or a duration before ``now`` (``7d``), as an aware UTC datetime."""
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{name}: {value!r} is neither an ISO-8601 time (2026-11-01T08:00) nor a duration (90m, 36h, 7d, 2w)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(timezone.utc)


def _values(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    out: list[str] = []
    for item in items:
        if item is None:
            continue
        out.extend(v.strip() for v in str(item).split(",") if v.strip())
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Filters:
    """A view: ``[since, until)`` (aware UTC, whole hours) and the dimension values to keep.

    An empty tuple keeps every value. ``range`` remembers a relative range (``7d``) so that a
    shared link keeps meaning "the last 7 days"; ``tz`` is the display time zone.
    """

    since: datetime
    until: datetime
    node: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    model_version: tuple[str, ...] = ()
    emotion: tuple[str, ...] = ()
    emotion_control: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    tz: str = "UTC"
    range: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")
            object.__setattr__(self, name, value.astimezone(timezone.utc))
        object.__setattr__(self, "since", floor_hour(self.since))
        object.__setattr__(self, "until", ceil_hour(self.until))
        if self.until <= self.since:
            raise ValueError("until must be after since")
        if self.until - self.since > MAX_SPAN:
            raise ValueError(f"the range spans more than {MAX_SPAN.days} days")
        parse_zone(self.tz)
        for name in DIMENSIONS:
            object.__setattr__(self, name, _values(getattr(self, name)))

    @classmethod
    def last(cls, span: str = DEFAULT_RANGE, *, now: datetime | None = None, **kw) -> "Filters":
        """The last ``span`` (one of RANGES) up to ``now``, e.g. ``Filters.last("30d")``."""
        if span not in RANGES:
            raise ValueError(f"range: {span!r} is not one of {', '.join(RANGES)}")
        end = ceil_hour(now or utc_now())
        return cls(since=end - RANGES[span], until=end, range=span, **kw)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], now: datetime | None = None) -> "Filters":
        """Parse URL / CLI parameters (see the module docstring); ValueError says what is wrong."""
        get = params.getlist if hasattr(params, "getlist") else None  # starlette's QueryParams

        def values(name: str) -> tuple[str, ...]:
            return _values(get(name) if get else params.get(name))

        unknown = set(params) - {"range", "since", "until", "tz", *DIMENSIONS}
        if unknown:
            raise ValueError(f"unknown filter parameter(s): {', '.join(sorted(unknown))}")
        now = now or utc_now()
        tz_name = (params.get("tz") or "UTC").strip() or "UTC"
        zone = parse_zone(tz_name)
        dims = {name: values(name) for name in DIMENSIONS}
        since_raw, until_raw = params.get("since"), params.get("until")
        if since_raw or until_raw:
            until = parse_time(until_raw, now=now, tz=zone, name="until") if until_raw else now
            if not since_raw:
                raise ValueError("since: missing (until needs a since, or use range=)")
            since = parse_time(since_raw, now=now, tz=zone, name="since")
            if ceil_hour(until) <= floor_hour(since):
                raise ValueError("since must be before until")
            return cls(since=since, until=until, tz=tz_name, **dims)
        return cls.last((params.get("range") or DEFAULT_RANGE).strip(), now=now, tz=tz_name, **dims)

    def to_params(self) -> dict[str, str]:
        """URL parameters that give this view back (relative ranges stay relative)."""
        out: dict[str, str] = {}
        if self.range:
            out["range"] = self.range
        else:
            out["since"] = self.since.isoformat().replace("+00:00", "Z")
            out["until"] = self.until.isoformat().replace("+00:00", "Z")
        for name in DIMENSIONS:
            if getattr(self, name):
                out[name] = ",".join(getattr(self, name))
        if self.tz != "UTC":
            out["tz"] = self.tz
        return out

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def span(self) -> timedelta:
        return self.until - self.since

    def active(self) -> dict[str, tuple[str, ...]]:
        """The dimension filters in use."""
        return {name: getattr(self, name) for name in DIMENSIONS if getattr(self, name)}

    def with_(self, **changes: Any) -> "Filters":
        return replace(self, **changes)

