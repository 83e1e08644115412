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

Every parameter is parsed here, for every view: a bad value is a ``ValueError`` whose message
starts with the parameter's name and says what is wrong (the web app answers it as a 400, the CLI
prints it). Times lie between :data:`EARLIEST` and :data:`LATEST`; a dimension takes at most
:data:`MAX_VALUES` values, each no longer than its column and without a NUL character (no stored
value can hold one), so no value a client sends reaches the database as an error.

Ranges are whole hours: ``since`` is rounded down and ``until`` up to the hour, so every figure
comes from the hourly rollups and a relative range always includes the current hour (``24h`` =
the current hour and the 23 before it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from voxtrail.config import SHOWN_CHARS, is_zone, shown
from voxtrail.event import FIELDS_BY_NAME

DIMENSIONS = ("node", "model", "model_version", "emotion", "emotion_control", "status")
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_RANGE = "24h"
# ASCII digits only: \d would also take digits of other scripts, and int() some that are not digits.
_RELATIVE = re.compile(r"^([0-9]+)\s*(m|min|h|d|w)$", re.ASCII)
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: No view goes back further than this (a typo such as since=20000d gets a clear error).
MAX_SPAN = timedelta(days=3660)
#: The times a view can name. Rollups count hours from 1970, and a time near the end of year 9999
#: has no local time in zones east of UTC (nor a next hour to round up to).
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 1, 1, tzinfo=timezone.utc)
#: Values one dimension filter may keep (node=a,b,...): a menu's worth, and a bounded SQL IN list.
MAX_VALUES = 100


def floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    down = floor_hour(t)
    return down if down == t else down + timedelta(hours=1)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_zone(name: str, param: str = "tz") -> ZoneInfo:
    """The IANA zone ``name``; ValueError naming ``param`` for anything else (a directory of the
    zone database such as ``Etc``, a file that is not a zone, a name too long for a file): the
    check is :func:`voxtrail.config.is_zone`, the one every flag, variable and key goes through."""
    if is_zone(name):
        return ZoneInfo(name)
    raise ValueError(f"{param}: unknown time zone {shown(name)} (use an IANA name such as UTC or Europe/Berlin)")


def parse_time(value: str, *, now: datetime, tz: ZoneInfo | timezone, name: str) -> datetime:
    """An ISO-8601 time or a duration before ``now`` (``7d``), as an aware UTC datetime between
    :data:`EARLIEST` and :data:`LATEST`; ValueError naming ``name`` otherwise."""
    text = value.strip()
    match = _RELATIVE.match(text)
    try:
        if match:
            # More digits than any representable duration has: no int() of a 5,000-digit number.
            amount = int(match.group(1)) if len(match.group(1)) <= 12 else 10**12
            parsed = now - timedelta(**{_UNITS[match.group(2)]: amount})
        else:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{name}: {shown(value)} is neither an ISO-8601 time (2026-11-01T08:00) "
                                 "nor a duration (90m, 36h, 7d, 2w)") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=tz)
            parsed = parsed.astimezone(timezone.utc)
    except OverflowError:  # a duration past year 1, or an offset that moves a time out of years 1-9999
        parsed = None
    if parsed is None or not EARLIEST <= parsed <= LATEST:
        raise ValueError(f"{name}: {shown(value)} is outside the times a view can show "
                         f"({EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} UTC)")
    return parsed


def check_text(value: str, name: str, max_chars: int) -> str:
    """A text parameter that is compared with a stored column: ValueError naming ``name`` for a
    NUL character (PostgreSQL cannot even compare one, and no stored value holds one) or for more
    characters than the column can hold."""
    if "\x00" in value:
        raise ValueError(f"{name}: {shown(value)} contains a NUL character")
    if len(value) > max_chars:
        raise ValueError(f"{name}: {shown(value)} is longer than {max_chars} characters")
    return value


def single(params: Mapping[str, Any], name: str) -> str | None:
    """The one value of a parameter that cannot be repeated (``since``, ``tz``, ``limit``, ...)."""
    raw = params.getlist(name) if hasattr(params, "getlist") else params.get(name)
    if isinstance(raw, (list, tuple)):
        if len(raw) > 1:
            raise ValueError(f"{name}: given {len(raw)} times; give it once")
        raw = raw[0] if raw else None
    return None if raw is None else str(raw)


def parse_limit(text: str | None, *, default: int, maximum: int, name: str = "limit") -> int:
    """A page or export size: ASCII digits between 1 and ``maximum``; ``default`` when empty."""
    text = (text or "").strip()
    if not text:
        return default
    if not re.fullmatch(r"[0-9]+", text, re.ASCII):
        raise ValueError(f"{name} must be a whole number, not {shown(text)}")
    # No int() of a 5,000-digit number: more digits than the maximum has is out of range anyway.
    if len(text.lstrip("0")) > len(str(maximum)) or not 1 <= int(text) <= maximum:
        raise ValueError(f"{name} must be between 1 and {maximum:,}, not {shown(text)}")
    return int(text)


def _values(raw: Any, name: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    out: list[str] = []
    for item in items:
        if item is None:
            continue
        out.extend(v.strip() for v in str(item).split(",") if v.strip())
    values = tuple(dict.fromkeys(out))
    if len(values) > MAX_VALUES:
        raise ValueError(f"{name}: {len(values)} values; at most {MAX_VALUES} can be kept at once")
    for value in values:
        check_text(value, name, FIELDS_BY_NAME[name].length)
    return values


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
            if not EARLIEST <= value <= LATEST:
                raise ValueError(f"{name}: {value.isoformat()} is outside the times a view can show "
                                 f"({EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} UTC)")
            object.__setattr__(self, name, value.astimezone(timezone.utc))
        object.__setattr__(self, "since", floor_hour(self.since))
        object.__setattr__(self, "until", ceil_hour(self.until))
        if self.until <= self.since:
            raise ValueError("until must be after since")
        if self.until - self.since > MAX_SPAN:
            raise ValueError(f"since/until: the range spans more than {MAX_SPAN.days} days")
        parse_zone(self.tz)
        for name in DIMENSIONS:
            object.__setattr__(self, name, _values(getattr(self, name), name))

    @classmethod
    def last(cls, span: str = DEFAULT_RANGE, *, now: datetime | None = None, **kw) -> "Filters":
        """The last ``span`` (one of RANGES) up to ``now``, e.g. ``Filters.last("30d")``."""
        if span not in RANGES:
            raise ValueError(f"range: {shown(span)} is not one of {', '.join(RANGES)}")
        end = ceil_hour(now or utc_now())
        return cls(since=end - RANGES[span], until=end, range=span, **kw)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], now: datetime | None = None) -> "Filters":
        """Parse URL / CLI parameters (see the module docstring); ValueError says what is wrong."""
        get = params.getlist if hasattr(params, "getlist") else None  # starlette's QueryParams

        def values(name: str) -> tuple[str, ...]:
            return _values(get(name) if get else params.get(name), name)

        unknown = set(params) - {"range", "since", "until", "tz", *DIMENSIONS}
        if unknown:
            names = sorted(shown(k) if not k.isprintable() or len(k) > SHOWN_CHARS else k for k in unknown)
            raise ValueError(f"unknown filter parameter(s): {', '.join(names[:10])}")
        now = now or utc_now()
        tz_name = (single(params, "tz") or "UTC").strip() or "UTC"
        zone = parse_zone(tz_name)
        dims = {name: values(name) for name in DIMENSIONS}
        since_raw, until_raw = single(params, "since"), single(params, "until")
        if since_raw or until_raw:
            until = parse_time(until_raw, now=now, tz=zone, name="until") if until_raw else now
            if not since_raw:
                raise ValueError("since: missing (until needs a since, or use range=)")
            since = parse_time(since_raw, now=now, tz=zone, name="since")
            if ceil_hour(until) <= floor_hour(since):
                raise ValueError("since must be before until")
            return cls(since=since, until=until, tz=tz_name, **dims)
        return cls.last((single(params, "range") or DEFAULT_RANGE).strip(), now=now, tz=tz_name, **dims)

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

