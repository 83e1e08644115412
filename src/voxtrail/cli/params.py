"""Parameter types of the command line: every value a flag takes is checked here, by the same
parser the settings use (voxtrail.config, voxtrail.store.purge), so a bad one is a usage error
(exit status 2) that names the flag in one line, before any work starts.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

import click

from voxtrail import config

#: Where a size, a count or a number of seconds stops being a plausible setting.
MAX_BODY = 1 << 30
MAX_SECONDS = 86400.0


def _usage(message: str, ctx: click.Context | None) -> click.UsageError:
    # UsageError rather than self.fail: the message already names the flag, BadParameter would
    # say it again ("Invalid value for '--tz': --tz: ...").
    return click.UsageError(message, ctx)


def _flag(param: click.Parameter | None) -> str:
    if isinstance(param, click.Argument):
        return param.human_readable_name  # NAME
    return param.opts[0] if param is not None and getattr(param, "opts", None) else "value"


class _Checked(click.ParamType):
    """A value checked by a settings parser, ``check(value, origin)``, that raises ConfigError."""

    def check(self, value, origin: str):
        raise NotImplementedError

    def convert(self, value, param, ctx):
        try:
            return self.check(value, _flag(param))
        except config.ConfigError as exc:
            raise _usage(str(exc), ctx) from None


class DatabaseUrl(_Checked):
    """A database URL; empty is an error (``--db "$URL"`` with ``URL`` unset), not the default."""

    name = "url"
    check = staticmethod(config.database_url)


class Zone(_Checked):
    """An IANA time zone name, checked by :func:`voxtrail.config.parse_zone`."""

    name = "zone"
    check = staticmethod(config.parse_zone)


class Age(_Checked):
    """An age (``180d``, ``12h``, ``off``) checked by :func:`voxtrail.store.purge.parse_age`; the
    text is passed on, to be resolved with the other sources of the same setting."""

    name = "age"

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def check(self, value, origin: str):
        from voxtrail.store.purge import parse_age

        parse_age(value, self.setting, origin)
        return value


class Seconds(click.ParamType):
    """A finite number of seconds between ``low`` and ``high`` (click's FloatRange takes nan and inf)."""

    name = "seconds"

    def __init__(self, low: float, high: float = MAX_SECONDS) -> None:
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                number = math.nan
        if not math.isfinite(number) or not self.low <= number <= self.high:
            raise _usage(f"{_flag(param)} must be a number of seconds from {self.low:g} to {self.high:g}, not "
                         f"{config.shown(value)}", ctx)
        return number


class LocalPath(click.ParamType):
    """A path to a local file, as given: whether it exists and what it is, its reader says (one
    place per kind of file); only a name no file can have is refused here. ``text``: the path
    also goes into text (a database URL), so bytes that are not UTF-8 are refused too."""

    name = "path"

    def __init__(self, text: bool = False) -> None:
        self.text = text

    def convert(self, value, param, ctx):
        text = str(value)
        if not text.strip():
            raise _usage(f"{_flag(param)} is empty: name a file", ctx)
        if "\x00" in text:
            raise _usage(f"{_flag(param)} {config.shown(text)} contains a NUL character: no file has such a name", ctx)
        if self.text:
            _check_utf8(text, param, ctx)
        return text


def _check_utf8(text: str, param, ctx) -> None:
    # Bytes of argv that are not UTF-8 arrive as lone surrogates, which no database, Redis or
    # URL can hold.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _usage(f"{_flag(param)} {config.shown(text)} is not UTF-8 text", ctx) from None


class Name(click.ParamType):
    """A non-empty name that is UTF-8 text (a node, a stream, a host)."""

    name = "name"

    def convert(self, value, param, ctx):
        text = str(value)
        if not text.strip():
            raise _usage(f"{_flag(param)} is empty: give a name", ctx)
        _check_utf8(text, param, ctx)
        return text


class When(click.ParamType):
    """A time: ISO-8601 or a duration back from now (``7d``), as the views parse it; ``all`` too
    when ``allow_all``. The text is passed on: the command reads it in its own time zone."""

    name = "time"

    def __init__(self, allow_all: bool = False) -> None:
        self.allow_all = allow_all

    def convert(self, value, param, ctx):
        from voxtrail.query.filters import parse_time

        text = str(value)
        if self.allow_all and text.strip() == "all":
            return text
        if not text.strip():
            hint = ", or 'all' for no limit" if self.allow_all else ""
            raise _usage(f"{_flag(param)} is empty: give a time such as 2026-11-01 or 7d{hint}", ctx)
        try:
            parse_time(text, now=datetime.now(timezone.utc), tz=timezone.utc, name=_flag(param))
        except ValueError as exc:
            raise _usage(str(exc), ctx) from None
        except OverflowError:  # a duration or an offset past what a datetime holds
            raise _usage(f"{_flag(param)}: {config.shown(text)} is too far from now", ctx) from None
        return text


_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-z]*)$", re.ASCII)
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
              "g": 1024**3, "gib": 1024**3, "gb": 1000**3}


class ByteSize(click.ParamType):
    """``10MiB``, ``512k``, ``1048576``: a whole number of bytes from 1 to :data:`MAX_BODY`."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        else:
            match = _SIZE.match(str(value).strip().lower().replace(" ", ""))
            size = 0
            if match and match.group(2) in SIZE_UNITS and len(match.group(1)) <= 20:
                size = int(float(match.group(1)) * SIZE_UNITS[match.group(2)])
        if not 1 <= size <= MAX_BODY:
            raise _usage(f"{_flag(param)} {config.shown(value)} is not a size from 1 byte to 1GiB: use e.g. 10MiB, "
                         f"512k or 1048576", ctx)
        return size
