"""Settings: command-line flags, then ``VOXTRAIL_*`` environment variables, then a TOML file.

The TOML file is ``--config PATH``, else ``$VOXTRAIL_CONFIG``, else ``./voxtrail.toml`` if it
exists. Keys are the setting names below (``db = "postgresql://..."``, ``tz = "Asia/Shanghai"``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_DB = "sqlite:///voxtrail.db"


class ConfigError(Exception):
    """A setting has a value voxtrail cannot use; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    db: str = field(repr=False)  # a URL may hold a password: never in a repr that reaches a log
    tz: str
    #: The TOML file's values as read (empty without a file): each feature reads its own table
    #: (``[mask]``, ``[keys]``, ``[retention]``) and its own ``VOXTRAIL_*`` variables.
    file: dict = field(default_factory=dict, repr=False)

    def section(self, name: str) -> dict:
        value = self.file.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] in the config file must be a table")
        return value


def local_timezone() -> str:
    """The machine's IANA time zone name (naive log times are local time by default)."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and _valid_tz(tz):
        return tz
    # /etc/localtime is a symlink into the zoneinfo database on most Linux systems.
    target = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in target:
        name = target.split("zoneinfo/", 1)[1]
        if _valid_tz(name):
            return name
    timezone_file = Path("/etc/timezone")
    if timezone_file.exists():
        name = timezone_file.read_text().strip()
        if _valid_tz(name):
            return name
    return "UTC"


def load(db: str | None = None, tz: str | None = None, config_file: str | None = None) -> Settings:
    file_values = _read_file(config_file)
    resolved_tz = tz or os.environ.get("VOXTRAIL_TZ") or file_values.get("tz") or local_timezone()
    if not _valid_tz(resolved_tz):
        raise ConfigError(f"unknown time zone {resolved_tz!r}: use an IANA name such as 'UTC' or 'Asia/Shanghai'")
    resolved_db = db or os.environ.get("VOXTRAIL_DB") or file_values.get("db") or DEFAULT_DB
    return Settings(db=str(resolved_db), tz=str(resolved_tz), file=file_values)


def _read_file(explicit: str | None) -> dict:
    path = explicit or os.environ.get("VOXTRAIL_CONFIG")
    if path is None:
        if not Path("voxtrail.toml").exists():
            return {}
        path = "voxtrail.toml"
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _valid_tz(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
