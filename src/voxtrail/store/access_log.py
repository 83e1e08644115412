"""The access log: who read which events, when, what they asked and how many rows they saw.

Each entry is appended in its own small transaction and chained to the one before it:
``entry_hash = sha256(prev_hash + canonical JSON of the entry)``, with ``prev_hash`` the previous
entry's hash (:data:`GENESIS` for the first). An entry changed, deleted or inserted behind
voxtrail's back breaks the chain at that point, and :func:`verify_access_log` names it. Nothing
in voxtrail updates or deletes an entry.

Appenders are serialised so the chain never forks (two entries naming the same predecessor):
SQLite takes its write lock up front (``BEGIN IMMEDIATE``), PostgreSQL a transaction-scoped
advisory lock, MySQL a named lock (``GET_LOCK``) held until the entry is committed.

An audited read that cannot be audited is refused: :func:`record_access` raises
:class:`AccessLogError` when the database does not take the entry, and the web app then answers
503 without the data (see docs/access-log.md).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, NamedTuple

import orjson
import sqlalchemy as sa

from voxtrail.store.engine import first_line
from voxtrail.store.schema import access_log

GENESIS = "0" * 64
ACTIONS = ("view_event", "search", "list", "export", "error_messages")
CHANNELS = ("web", "api", "cli")
#: Columns an entry's hash covers, in this order (``id`` is not: the chain itself orders entries).
HASHED = ("at", "actor", "role", "channel", "action", "target", "query", "row_count", "client")

_PG_LOCK_KEY = 0x766F785F61636365  # "vox_acce": distinct from the migration lock
_MYSQL_LOCK = "voxtrail_access_log"
_MYSQL_LOCK_WAIT_S = 30
_VERIFY_CHUNK = 5_000


class AccessLogError(Exception):
    """The access log could not take an entry: the audited read must not go ahead."""


class Verification(NamedTuple):
    ok: bool
    first_bad_id: int | None  # the first entry whose hash or link does not match
    checked: int  # entries read up to (and including) the first bad one


def canonical_query(query: dict[str, Any] | None) -> str | None:
    """The stored JSON text of a query: sorted keys, no spaces, so equal questions read alike."""
    if query is None:
        return None
    return orjson.dumps(query, option=orjson.OPT_SORT_KEYS, default=str).decode()


def at_text(at: datetime) -> str:
    """The time as hashed: naive UTC, microseconds, exactly what every dialect stores and returns."""
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc).replace(tzinfo=None)
    return at.isoformat(sep=" ", timespec="microseconds")


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """``sha256(prev_hash + canonical JSON of the hashed columns)``, hex (see :func:`_hash`)."""
    return _hash(prev_hash, tuple(entry.get(name) for name in HASHED))


def _hash(prev_hash: str, values: tuple) -> str:
    """The canonical JSON is an object of the :data:`HASHED` columns, keys sorted, no spaces,
    UTF-8 with non-ASCII characters as they are; ``at`` as :func:`at_text`, ``query`` the stored text."""
    fields = dict(zip(HASHED, values))
    fields["at"] = at_text(fields["at"])
    fields["row_count"] = int(fields["row_count"])
    return hashlib.sha256(prev_hash.encode() + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record_access(engine_or_conn: sa.Engine | sa.Connection, *, actor: str, role: str | None, channel: str,
                  action: str, target: str | None = None, query: dict[str, Any] | None, row_count: int,
                  client: str | None = None) -> dict[str, Any]:
    """Append one entry and return it (with ``id`` and ``entry_hash``); AccessLogError if refused.

    A Connection must not be inside a transaction: the entry is its own short transaction,
    committed before the caller shows anything.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown access-log action {action!r} (one of {', '.join(ACTIONS)})")
    if channel not in CHANNELS:
        raise ValueError(f"unknown access-log channel {channel!r} (one of {', '.join(CHANNELS)})")
    if row_count < 0:
        raise ValueError("row_count cannot be negative")
    entry = {
        "actor": actor, "role": role, "channel": channel, "action": action, "target": target,
        "query": canonical_query(query), "row_count": int(row_count), "client": client,
    }
    try:
        with _appending(engine_or_conn) as conn:
            last = conn.execute(
                sa.select(access_log.c.id, access_log.c.entry_hash).order_by(access_log.c.id.desc()).limit(1)
            ).first()
            # Timed under the lock: ids and times then run in the same order.
            entry["at"] = datetime.now(timezone.utc).replace(tzinfo=None)
            entry["prev_hash"] = last.entry_hash if last is not None else GENESIS
            entry["entry_hash"] = entry_hash(entry["prev_hash"], entry)
            entry["id"] = conn.execute(access_log.insert().values(**entry)).inserted_primary_key[0]
    except sa.exc.SQLAlchemyError as exc:
        raise AccessLogError(f"the access log refused the entry ({first_line(exc)}); "
                             "the read was not done: check the database, then retry") from exc
    return entry


@contextmanager
def _appending(engine_or_conn: sa.Engine | sa.Connection) -> Iterator[sa.Connection]:
    """A connection in a transaction that holds the access log's append lock."""
    if isinstance(engine_or_conn, sa.Connection):
        if engine_or_conn.in_transaction():
            raise ValueError("record_access needs a connection outside a transaction (the entry is its own)")
        with _locked(engine_or_conn) as conn:
            yield conn
        return
    with engine_or_conn.connect() as conn, _locked(conn) as locked:
        yield locked


@contextmanager
def _locked(conn: sa.Connection) -> Iterator[sa.Connection]:
    dialect = conn.dialect.name
    if dialect == "sqlite":
        # engine.py's begin hook issues BEGIN IMMEDIATE: the database write lock, taken up front.
        conn = conn.execution_options(vx_immediate=True)
        with conn.begin():
            yield conn
    elif dialect == "postgresql":
        with conn.begin():
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            yield conn
    else:
        # A named lock lives in the session, not the transaction: taken before the transaction so
        # the read of the last entry sees every committed one, released only after the commit.
        got = conn.execute(sa.text("SELECT GET_LOCK(:name, :wait)"),
                           {"name": _MYSQL_LOCK, "wait": _MYSQL_LOCK_WAIT_S}).scalar()
        conn.commit()
        if got != 1:
            raise AccessLogError(f"waited {_MYSQL_LOCK_WAIT_S} s for the access log's lock; the read was not done")
        try:
            with conn.begin():
                yield conn
        finally:
            conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK})
            conn.commit()


def verify_access_log(engine: sa.Engine) -> Verification:
    """Walk the log in id order: every entry must hash to its ``entry_hash`` and name its
    predecessor's hash (the first names :data:`GENESIS`). Read in chunks: memory stays flat."""
    c = access_log.c
    columns = [c.id, c.prev_hash, c.entry_hash, *(c[name] for name in HASHED)]
    expected_prev, checked, after = GENESIS, 0, None
    with engine.connect() as conn:
        while True:
            query = sa.select(*columns).order_by(c.id).limit(_VERIFY_CHUNK)
            if after is not None:
                query = query.where(c.id > after)
            rows = conn.execute(query).all()
            for entry_id, prev_hash, stored_hash, *values in rows:
                checked += 1
                if prev_hash != expected_prev or _hash(prev_hash, values) != stored_hash:
                    return Verification(False, entry_id, checked)
                expected_prev = stored_hash
            if len(rows) < _VERIFY_CHUNK:
                return Verification(True, None, checked)
            after = rows[-1][0]


def head(engine: sa.Engine) -> dict[str, Any]:
    """The newest entry's id and hash: a checkpoint to keep elsewhere (a log cut short at the
    end, or rewritten whole, no longer matches it). One index lookup."""
    c = access_log.c
    with engine.connect() as conn:
        last = conn.execute(sa.select(c.id, c.entry_hash).order_by(c.id.desc()).limit(1)).first()
    return {"last_id": last.id if last else None, "last_hash": last.entry_hash if last else GENESIS}
