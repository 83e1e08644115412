"""Settings: command-line flags, then ``VOXTRAIL_*`` environment variables, then a TOML file.

The TOML file is ``--config PATH``, else ``$VOXTRAIL_CONFIG``, else ``./voxtrail.toml`` if it
exists. Keys are the setting names below (``db = "postgresql://..."``, ``tz = "Asia/Shanghai"``).

Every setting is resolved by :func:`pick` (a flag given empty is a mistake, a variable set to an
empty string counts as unset) and checked by one parser per kind of value: :func:`parse_zone` for
every flag, variable and key that names a time zone, ``voxtrail.store.purge.parse_age`` for ages.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voxtrail.localfs import LocalFileError, read_small_file

DEFAULT_DB = "sqlite:///voxtrail.db"
#: The longest IANA zone name has 32 characters; a longer name is refused before any file lookup.
MAX_ZONE_CHARS = 64
#: Characters of a refused value that an error message repeats.
SHOWN_CHARS = 40


class ConfigError(Exception):
    """A setting has a value voxtrail cannot use; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    db: str = field(repr=False)  # a URL may hold a password: never in a repr that reaches a log
    tz: str
    #: The TOML file's values as read (empty without a file): each feature reads its own table
    #: (``[mask]``, ``[keys]``, ``[retention]``) and its own ``VOXTRAIL_*`` variables.
    file: dict = field(default_factory=dict, repr=False)
    #: The TOML file read, for messages that name a key in it.
    file_path: str | None = None

    def section(self, name: str) -> dict:
        value = self.file.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] in the config file must be a table")
        return value

    def where(self, key: str, section: str | None = None) -> str:
        """How a message names a TOML key: ``[retention] audit in voxtrail.toml``."""
        return f"{f'[{section}] ' if section else ''}{key} in {self.file_path or 'the config file'}"


def shown(value: Any) -> str:
    """A value as an error message repeats it: quoted, and cut short when long."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def pick(flag: Any, flag_name: str | None, env_name: str | None, table: dict, key: str,
         where: str) -> tuple[Any, str | None]:
    """A setting's raw value and where it came from (for messages), or ``(None, None)``.

    The flag wins, then the variable, then ``table[key]`` (named ``where``). A flag or key given
    as an empty string is a mistake (``--db "$URL"`` with ``URL`` unset), not a request for the
    default; a variable set to an empty string counts as unset, as click treats the variables of
    the flags it reads itself.
    """
    if flag is not None:
        if isinstance(flag, str) and not flag.strip():
            raise ConfigError(f"{flag_name} is empty: give a value, or leave the flag out for the default")
        return flag, flag_name
    if env_name and (env := os.environ.get(env_name)):
        return env, env_name
    if key in table:
        value = table[key]
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{where} is empty: give a value, or remove the key for the default")
        return value, where
    return None, None


def text_value(value: Any, origin: str) -> str:
    """A setting that must be text (a TOML file may hold a number or a list instead)."""
    if not isinstance(value, str):
        raise ConfigError(f"{origin} must be a string, not {type(value).__name__} {shown(value)}")
    return value


def parse_zone(name: Any, origin: str) -> str:
    """``name`` if it is an IANA time zone; ConfigError naming ``origin`` otherwise.

    The one check of a zone name: ``ZoneInfo`` alone raises ``IsADirectoryError`` for a
    directory of the zone database (``Etc``, ``America``) and ``OSError`` for a name too long
    for a file name."""
    if is_zone(name):
        return name
    raise ConfigError(f"{origin}: unknown time zone {shown(name)}: use an IANA name such as 'UTC' or "
                      f"'Asia/Shanghai'")


def is_zone(name: Any) -> bool:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_ZONE_CHARS or not name.isprintable():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def database_url(value: Any, origin: str) -> str:
    """A database URL as given (Store.open says what is wrong with one it cannot use)."""
    url = text_value(value, origin)
    if not url.strip():
        raise ConfigError(f"{origin} is empty: give a database URL such as sqlite:///voxtrail.db")
    if "\x00" in url:
        raise ConfigError(f"{origin} contains a NUL character: not a database URL")
    return url


def local_timezone() -> str:
    """The machine's IANA time zone name (naive log times are local time by default)."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and is_zone(tz):
        return tz
    # /etc/localtime is a symlink into the zoneinfo database on most Linux systems.
    target = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in target:
        name = target.split("zoneinfo/", 1)[1]
        if is_zone(name):
            return name
    timezone_file = Path("/etc/timezone")
    if timezone_file.exists():
        name = timezone_file.read_text().strip()
        if is_zone(name):
            return name
    return "UTC"


def load(db: str | None = None, tz: str | None = None, config_file: str | None = None) -> Settings:
    file_values, file_path = _read_file(config_file)
    raw_tz, origin = pick(tz, "--tz", "VOXTRAIL_TZ", file_values, "tz", f"tz in {file_path}")
    resolved_tz = local_timezone() if raw_tz is None else parse_zone(raw_tz, origin)
    raw_db, origin = pick(db, "--db", "VOXTRAIL_DB", file_values, "db", f"db in {file_path}")
    resolved_db = DEFAULT_DB if raw_db is None else database_url(raw_db, origin)
    return Settings(db=resolved_db, tz=resolved_tz, file=file_values, file_path=file_path)


def _read_file(explicit: str | None) -> tuple[dict, str | None]:
    path, _ = pick(explicit, "--config", "VOXTRAIL_CONFIG", {}, "", "")
    if path is None:
        if not Path("voxtrail.toml").exists():
            return {}, None
        path = "voxtrail.toml"
    try:
        data, _ = read_small_file(path, "config file")
    except LocalFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return tomllib.loads(data.decode("utf-8")), str(path)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text: TOML files are") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
