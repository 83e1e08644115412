"""Database URLs and engines: one place that knows each dialect's quirks at connect time.

Users name a database with a plain URL (``postgresql://``, ``mysql://``); we pick the drivers
we ship (psycopg 3, PyMySQL) so they never have to know SQLAlchemy's ``+driver`` syntax, and
every failure to reach the database becomes a :class:`StoreError` with one actionable line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

DEFAULT_URL = "sqlite:///voxtrail.db"

#: URL scheme (before any ``+driver``) -> (canonical dialect name, drivername we use).
_DRIVERS = {
    "sqlite": ("sqlite", "sqlite+pysqlite"),
    "postgresql": ("postgresql", "postgresql+psycopg"),
    "postgres": ("postgresql", "postgresql+psycopg"),
    "mysql": ("mysql", "mysql+pymysql"),
    "mariadb": ("mysql", "mysql+pymysql"),
}

#: Fixed per-session settings for MySQL/MariaDB. UTC makes CURRENT_TIMESTAMP(6) (ingested_at)
#: agree with the UTC-naive convention; strict mode makes a NULL in a NOT NULL column an error
#: instead of a silent '' in multi-row INSERTs; a known sql_mode (no ANSI_QUOTES, no
#: NO_BACKSLASH_ESCAPES) is what the bulk writer's literal quoting relies on.
_MYSQL_INIT = "SET time_zone = '+00:00', sql_mode = 'TRADITIONAL'"


class StoreError(Exception):
    """A database problem the user can fix; ``str()`` is one line that says what to do."""


def _mask(text: str) -> str:
    """Hide a password in a URL-ish string we could not parse (so cannot render safely)."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", text)


def normalize_url(url: str | URL | None) -> tuple[URL, str]:
    """The URL with our drivers and options, and the canonical dialect name."""
    raw = url if url else DEFAULT_URL
    try:
        u = make_url(raw)
    except Exception:
        raise StoreError(
            f"invalid database URL {_mask(str(raw))!r}: expected e.g. sqlite:///voxtrail.db, "
            "postgresql://user:password@host/db or mysql://user:password@host/db"
        ) from None
    scheme = u.drivername.split("+", 1)[0]
    if scheme not in _DRIVERS:
        raise StoreError(
            f"unsupported database {scheme!r} in {u.render_as_string(hide_password=True)}: "
            "use sqlite:///file.db, postgresql://... or mysql://... (MariaDB too)"
        )
    dialect, driver = _DRIVERS[scheme]
    u = u.set(drivername=driver)
    if dialect == "mysql" and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})
    return u, dialect


def _sqlite_path(u: URL) -> Path | None:
    if u.database in (None, "", ":memory:") or u.database.startswith("file:"):
        return None
    return Path(u.database)


def _prepare_sqlite_file(u: URL, shown: str) -> None:
    """Fail clearly on a missing directory, and create the file private (it holds texts)."""
    path = _sqlite_path(u)
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise StoreError(
            f"cannot open {shown}: directory {str(parent)!r} does not exist; create it or choose another path"
        )
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create SQLite database {str(path)!r}: {exc.strerror}; check permissions") from None
    os.close(fd)


def _sqlite_listeners(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # isolation_level=None stops the sqlite3 module from issuing its own BEGIN, so the
        # transactions we (and SQLAlchemy) start are exactly the ones we ask for.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # Writers take the lock up front: a deferred transaction that upgrades to a write lock
        # fails with SQLITE_BUSY immediately (busy_timeout does not apply), so two importers
        # would error instead of waiting their turn.
        if conn.get_execution_options().get("vx_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def make_engine(u: URL, dialect: str) -> sa.Engine:
    shown = u.render_as_string(hide_password=True)
    try:
        if dialect == "sqlite":
            _prepare_sqlite_file(u, shown)
            kw: dict = {}
            if _sqlite_path(u) is None:
                kw = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
            engine = sa.create_engine(u, **kw)
            _sqlite_listeners(engine)
        elif dialect == "postgresql":
            args = {"connect_timeout": 10}
            if "options" not in u.query:
                args["options"] = "-c TimeZone=UTC"  # now() and ts (UTC-naive) compare correctly
            engine = sa.create_engine(u, pool_pre_ping=True, connect_args=args)
        else:
            # client_flag=0 drops SQLAlchemy's FOUND_ROWS so an ON DUPLICATE KEY no-op reports 0
            # affected rows: that is how the bulk writer tells inserts from duplicates.
            engine = sa.create_engine(
                u, pool_pre_ping=True, pool_recycle=3600,
                connect_args={"client_flag": 0, "init_command": _MYSQL_INIT, "connect_timeout": 10},
            )
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot use {shown}: {first_line(exc)}") from exc
    return engine


def first_line(exc: BaseException) -> str:
    """The driver's own message, first line only (psycopg adds multi-line detail)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip() or type(orig).__name__
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text


def check_connection(engine: sa.Engine, dialect: str) -> None:
    """Connect once now so a wrong URL fails at startup, not in the middle of an import."""
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        hint = (
            "check that the file is writable"
            if dialect == "sqlite"
            else "check that the server is running and the URL's host, port, user, password and database are right"
        )
        raise StoreError(f"cannot connect to {shown}: {first_line(exc)}; {hint}") from exc
