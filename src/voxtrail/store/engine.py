"""Database URLs and engines: one place that knows each dialect's quirks at connect time.

Users name a database with a plain URL (``postgresql://``, ``mysql://``); we pick the drivers
we ship (psycopg 3, PyMySQL) so they never have to know SQLAlchemy's ``+driver`` syntax, and
every failure to reach the database becomes a :class:`StoreError` with one actionable line.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from voxtrail.redact import SECRET_PARAMS, SECRET_QUERY, mask_url

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

#: MySQL TLS parameters, in SQLAlchemy's spelling (ssl_ca...) and PyMySQL's (ssl_verify_cert...).
_MYSQL_TLS = ("ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_key_password", "ssl_cipher",
              "ssl_check_hostname", "ssl_verify_cert", "ssl_verify_identity")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}

log = logging.getLogger("voxtrail.store")
_warned_readable: set[str] = set()


class StoreError(Exception):
    """A database problem the user can fix; ``str()`` is one line that says what to do."""


def shown_url(u: URL) -> str:
    """``u`` for messages and logs: its password and secret query values hidden."""
    return SECRET_QUERY.sub(r"\1=***", u.render_as_string(hide_password=True))


def _split_secrets(u: URL) -> tuple[URL, dict]:
    """Secret query parameters go to the driver as connect arguments and leave the engine's URL,
    so no rendering of that URL (status lines, logs, errors) can show them."""
    secrets = {k: v for k, v in u.query.items() if k.lower() in SECRET_PARAMS}
    return u.difference_update_query(secrets), secrets


def normalize_url(url: str | URL | None) -> tuple[URL, str]:
    """The URL with our drivers and options, and the canonical dialect name."""
    raw = url if url else DEFAULT_URL
    try:
        u = make_url(raw)
    except Exception:
        raise StoreError(
            f"invalid database URL {mask_url(str(raw))!r}: expected e.g. sqlite:///voxtrail.db, "
            "postgresql://user:password@host/db or mysql://user:password@host/db"
        ) from None
    scheme = u.drivername.split("+", 1)[0]
    if scheme not in _DRIVERS:
        raise StoreError(
            f"unsupported database {scheme!r} in {shown_url(u)}: "
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
        _warn_if_readable(path)
        return
    except OSError as exc:
        raise StoreError(f"cannot create SQLite database {str(path)!r}: {exc.strerror}; check permissions") from None
    os.close(fd)


def _warn_if_readable(path: Path) -> None:
    """Say once per file if others may read it; its mode is the owner's choice, so not changed."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return  # SQLite itself will report what is wrong with the path
    key = str(path.resolve())
    if mode & 0o077 and key not in _warned_readable:
        _warned_readable.add(key)
        log.warning("%s is readable by other users (mode %03o) and holds what users asked to synthesise: "
                    "run 'chmod 600 %s' (voxtrail creates its databases 0600)", path, mode, path)


def _flag(options: dict, name: str, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    if str(value).lower() in _TRUE | _FALSE:
        return str(value).lower() in _TRUE
    raise StoreError(f"{name}={value!r} in the database URL: use true or false")


def _mysql_tls(u: URL, shown: str) -> dict:
    """Connect arguments making a MySQL URL's TLS parameters one SSLContext that verifies the server.

    Left to themselves, SQLAlchemy folds ssl_ca/ssl_cert/ssl_key into PyMySQL's ``ssl`` dict and
    passes ssl_verify_cert/ssl_verify_identity on as strings; PyMySQL then rebuilds its settings
    from the latter and silently drops the CA and the client certificate (and reads "false" as
    true). The context built here replaces both, so every documented spelling does what it says;
    the parameters stay in the URL, so ``voxtrail status`` shows them.
    """
    query = dict(u.query)
    if "ssl_disabled" in query and _flag(query, "ssl_disabled", False):
        return {"ssl_disabled": True, "ssl": None, "ssl_verify_cert": None, "ssl_verify_identity": None}
    options = {k: query[k] for k in _MYSQL_TLS if k in query}
    if not options:
        return {"ssl_disabled": False} if "ssl_disabled" in query else {}
    verify = _flag(options, "ssl_verify_cert", True)
    check_host = verify and _flag(options, "ssl_verify_identity", True) and _flag(options, "ssl_check_hostname", True)
    try:
        ctx = ssl.create_default_context(cafile=options.get("ssl_ca"), capath=options.get("ssl_capath"))
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT  # MySQL's self-made certificates lack the strict extensions
        ctx.check_hostname = check_host
        if not verify:
            ctx.verify_mode = ssl.CERT_NONE
        if "ssl_cert" in options:
            ctx.load_cert_chain(options["ssl_cert"], keyfile=options.get("ssl_key"),
                                password=options.get("ssl_key_password"))
        if "ssl_cipher" in options:
            ctx.set_ciphers(options["ssl_cipher"])
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        files = ", ".join(f"{k}={options[k]}" for k in ("ssl_ca", "ssl_capath", "ssl_cert", "ssl_key") if k in options)
        raise StoreError(f"cannot use the TLS settings of {shown} ({files}): {exc.strerror or exc}; "
                         "check that the files exist, are PEM and readable") from None
    overridden = {k: None for k in ("ssl_verify_cert", "ssl_verify_identity", "ssl_key_password") if k in options}
    return {**overridden, "ssl_disabled": False, "ssl": ctx}


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


def make_engine(u: URL, dialect: str, pool_timeout: float | None = None) -> sa.Engine:
    """An engine for ``u``. hide_parameters keeps bound values (a session's CSRF token, event
    texts) out of the SQL errors that end up in tracebacks and logs. ``pool_timeout``: how long
    a checkout waits for a free pooled connection (SQLAlchemy's 30 s when None); the web server
    sets it short, to answer 503 at once rather than queue requests."""
    shown = shown_url(u)
    pooled = {} if pool_timeout is None else {"pool_timeout": pool_timeout}
    try:
        if dialect == "sqlite":
            _prepare_sqlite_file(u, shown)
            kw: dict = pooled
            if _sqlite_path(u) is None:
                kw = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
            engine = sa.create_engine(u, hide_parameters=True, **kw)
            _sqlite_listeners(engine)
        elif dialect == "postgresql":
            u, secrets = _split_secrets(u)
            args = {"connect_timeout": 10, **secrets}
            if "options" not in u.query:
                args["options"] = "-c TimeZone=UTC"  # now() and ts (UTC-naive) compare correctly
            engine = sa.create_engine(u, pool_pre_ping=True, hide_parameters=True, connect_args=args, **pooled)
        else:
            tls = _mysql_tls(u, shown)
            u, secrets = _split_secrets(u)
            # client_flag=0 drops SQLAlchemy's FOUND_ROWS so an ON DUPLICATE KEY no-op reports 0
            # affected rows: that is how the bulk writer tells inserts from duplicates.
            engine = sa.create_engine(
                u, pool_pre_ping=True, pool_recycle=3600, hide_parameters=True, **pooled,
                connect_args={"client_flag": 0, "init_command": _MYSQL_INIT, "connect_timeout": 10,
                              **secrets, **tls},
            )
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot use {shown}: {first_line(exc)}") from exc
    return engine


#: SQLSTATE classes of a statement refused for the values it carries: 22 data exception (NUL in
#: text, a malformed JSON escape, a value out of range), 23 integrity constraint violation (NOT NULL,
#: CHECK), 54 program limit exceeded (JSON nested too deep, a value too large for an index).
_DATA_SQLSTATE_CLASSES = ("22", "23", "54")
#: MySQL/MariaDB error codes that say the same but which PyMySQL raises as OperationalError or
#: InternalError: incorrect datetime (1292), invalid character string (1300), packet too large for
#: one row (1153, 1301), CHECK / JSON_VALID failed (3819 MySQL, 4025 MariaDB), invalid JSON (3140,
#: 3141, 3146), JSON too deep (3157), value out of range (1690), wrong value for a type (1411).
_MYSQL_DATA_CODES = frozenset({1153, 1292, 1300, 1301, 1411, 1690, 3140, 3141, 3146, 3157, 3819, 4025})


def is_data_error(exc: BaseException) -> bool:
    """True when the database (or its driver) refused a statement for the values it carries, which
    sending it again cannot change; False for an outage (unreachable, locked, out of disk), which
    retrying can. Callers quarantine the former and retry the latter."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, (UnicodeError, OverflowError)):  # a driver encoding a value (a datetime, a str)
        return True
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return sqlstate[:2] in _DATA_SQLSTATE_CLASSES
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and type(orig).__module__.startswith("pymysql"):
        return args[0] in _MYSQL_DATA_CODES or type(orig).__name__ in ("DataError", "IntegrityError")
    # psycopg refusing a value before sending it (NUL in a string) has no SQLSTATE; sqlite3 has none.
    return type(orig).__name__ in ("DataError", "IntegrityError")


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
    shown = shown_url(engine.url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        reason = first_line(exc)
        if dialect == "sqlite":
            hint = "check that the file is writable"
        elif re.search(r"\bssl\b|certificate|tls", reason, re.IGNORECASE):
            hint = "check that the server accepts TLS and the URL's TLS parameters (see docs/security.md)"
        else:
            hint = "check that the server is running and the URL's host, port, user, password and database are right"
        raise StoreError(f"cannot connect to {shown}: {reason}; {hint}") from exc
