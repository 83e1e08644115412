"""SQLite bulk path: rows are staged in the encoding thread, copied by SQL in the writer's.

Binding a million Python values holds the GIL; SQLite's own insert work does not. So ``encode``
(the importer's parsing thread) ingests the batch's Arrow columns into a throwaway *scratch*
database file with ADBC's SQLite driver (no Python object per value), and the
write transaction is one ``INSERT INTO main.tts_events ... SELECT ... FROM vx_slot.rows``: pure C
that runs while the next batch is parsed. Constants are written into the SQL as literals.
``ON CONFLICT (request_id) DO NOTHING`` (not ``INSERT OR IGNORE``, which would also swallow NOT
NULL violations) skips duplicates. The transaction is the caller's (BEGIN IMMEDIATE).

Scratch files live in a private temporary directory per writer (one writer per Store), removed
by :meth:`SQLiteWriter.close`; a slot file is deleted as soon as the batch it holds is written,
so no batch's text outlives its write on disk. The owner holds an flock on a file inside it for its whole life;
the kernel drops that lock when a process dies, however it dies, so the next writer removes
directories whose lock it can take: a killed import leaves nothing behind for long. A payload
holds its slot file until the payload is dropped, so a slot is never refilled while a batch
that names it may still be written.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import weakref
from datetime import datetime, timezone
from typing import Any, Iterator

import polars as pl
import sqlalchemy as sa

from voxtrail.store.bulk import TS_FORMAT, PreparedBatch

#: The alias a slot is attached under: only for the duration of one write, because BEGIN
#: IMMEDIATE locks every attached database and would block the encoder filling another slot.
ALIAS = "vx_slot"


def _literal(value: Any) -> str | None:
    """``value`` as an SQLite literal, or None when it must be bound instead."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, datetime):
        value = value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, str) and "\x00" not in value:  # sqlite3 refuses NUL in SQL text
        return "'" + value.replace("'", "''") + "'"
    return None


def _quote(name: str) -> str:
    return '"' + name + '"'


_adbc: tuple[Any, Any] | None = None


def _adbc_modules() -> tuple[Any, Any]:
    """ADBC's SQLite driver and manager, imported on first use (not at CLI start-up).

    The low-level API takes the polars frame through the Arrow C stream interface; the DB-API
    module is not used because it imports pyarrow (~95 MB of resident libraries) when present.
    """
    global _adbc
    if _adbc is None:
        import adbc_driver_manager
        import adbc_driver_sqlite

        _adbc = (adbc_driver_sqlite, adbc_driver_manager)
    return _adbc


class _Slot:
    """One scratch file. ADBC's driver fills it; the writer's stdlib connection attaches it.

    ADBC's driver bundles its own copy of the SQLite library, and two copies must never have
    the same file open at once in one process (POSIX locks are per process: one copy closing
    its descriptor drops the other's locks). So ADBC opens nothing but slot files, each fill
    starts from a newly created file (a new inode, which no stdlib connection can hold), and
    ADBC's database handle is closed before the payload naming the slot exists. The stdlib side
    opens a slot only while that payload is written (ATTACH ... DETACH), and a slot is refilled
    only once the payload naming it is gone.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def fill(self, frame: pl.DataFrame, extra: dict[str, pl.DataFrame] | None = None) -> None:
        driver, manager = _adbc_modules()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        with contextlib.ExitStack() as stack:
            db = driver.connect(self.path)
            stack.callback(db.close)
            conn = manager.AdbcConnection(db)  # autocommit: the ingest is its own transaction
            stack.callback(conn.close)
            stmt = manager.AdbcStatement(conn)
            stack.callback(stmt.close)
            for pragma in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF"):
                stmt.set_sql_query(pragma)
                stmt.execute_update()
            # Column types come from the Arrow types (REAL, INTEGER; string views get none):
            # values keep their type, and the main table's affinities apply on the copy.
            for table, data in {"rows": frame, **(extra or {})}.items():
                stmt.set_options(
                    **{
                        manager.INGEST_OPTION_TARGET_TABLE: table,
                        manager.INGEST_OPTION_MODE: manager.INGEST_OPTION_MODE_CREATE,
                    }
                )
                stmt.bind_stream(data)  # the Arrow C stream interface: no Python object per value
                stmt.execute_update()  # runs without the GIL
        os.chmod(self.path, 0o600)  # rows hold texts; the 0700 directory already shuts others out

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


class Scratch:
    """An encoded batch: the INSERT ... SELECT and the slot file it reads."""

    def __init__(self, sql: str, slot: _Slot, rollup_sources: dict[str, str] | None = None) -> None:
        self.sql = sql
        self.path = slot.path
        self.rollup_sources = rollup_sources or {}


SCRATCH_PREFIX = "voxtrail-scratch-"
OWNER_LOCK = "owner.lock"


def _make_scratch_dir() -> tuple[str, int]:
    """A private (0700) directory, locked by this process before any sweeper can see it."""
    _sweep_abandoned()
    staging = tempfile.mkdtemp(prefix=".voxtrail-new-")
    fd = os.open(os.path.join(staging, OWNER_LOCK), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    final = os.path.join(os.path.dirname(staging), SCRATCH_PREFIX + os.path.basename(staging)[len(".voxtrail-new-"):])
    os.rename(staging, final)
    return final, fd


def _sweep_abandoned() -> None:
    """Remove scratch directories of processes that died without cleaning up."""
    for directory in glob.glob(os.path.join(tempfile.gettempdir(), SCRATCH_PREFIX + "*")):
        try:
            fd = os.open(os.path.join(directory, OWNER_LOCK), os.O_RDWR)
        except OSError:
            continue  # not ours to judge (another user's, or already gone)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its owner is alive
            continue
        shutil.rmtree(directory, ignore_errors=True)
        os.close(fd)


class SQLiteWriter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dir: str | None = None
        self._dir_lock_fd: int | None = None
        self._free: list[_Slot] = []
        self._made = 0

    def _take(self) -> _Slot:
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._dir is None:
                self._dir, self._dir_lock_fd = _make_scratch_dir()  # mode 0700: rows hold texts
            self._made += 1
            return _Slot(os.path.join(self._dir, f"slot{self._made}.db"))

    def _give_back(self, slot: _Slot) -> None:
        # The batch was written (or dropped): its rows, texts included, must not stay on disk
        # until the slot is refilled, which for a Recorder or a tail may be never.
        slot.discard()
        with self._lock:
            if self._dir is not None and os.path.dirname(slot.path) == self._dir:
                self._free.append(slot)

    def encode(self, batch: PreparedBatch, rollup_delta: dict | None = None) -> Scratch:
        frame = batch.frame
        # ingested_at as one literal per batch: a DEFAULT expression costs a strftime per row.
        constants = {**batch.constants, "ingested_at": datetime.now(timezone.utc).replace(tzinfo=None)}
        literals: dict[str, str] = {}
        for name, value in constants.items():
            lit = _literal(value)
            if lit is None:  # rare: bind it per row after all
                frame = frame.with_columns(pl.lit(value).alias(name))
            else:
                literals[name] = lit
        bound = frame.columns
        names = ", ".join(_quote(n) for n in [*bound, *literals])
        values = ", ".join([f"c{i}" for i in range(len(bound))] + list(literals.values()))
        # WHERE true: without it SQLite would parse ON CONFLICT as a join constraint.
        sql = (
            f"INSERT INTO main.tts_events ({names}) SELECT {values} FROM {ALIAS}.rows "
            "WHERE true ORDER BY rowid ON CONFLICT (request_id) DO NOTHING"
        )
        frame = frame.with_columns(pl.col(pl.Datetime).dt.strftime(TS_FORMAT))
        frame = frame.rename({name: f"c{i}" for i, name in enumerate(bound)})
        # Rollup increments ride in the same file: the writer upserts them with INSERT ... SELECT
        # instead of binding every rollup row from Python (hundreds of thousands per million events).
        extra = {f"r{i}": frame for i, frame in enumerate((rollup_delta or {}).values()) if frame.height}
        sources = {name: f"{ALIAS}.r{i}" for i, (name, frame) in enumerate((rollup_delta or {}).items()) if frame.height}
        slot = self._take()
        try:
            slot.fill(frame, extra)
        except BaseException:
            slot.discard()
            raise
        payload = Scratch(sql, slot, sources)
        weakref.finalize(payload, self._give_back, slot)
        return payload

    @contextlib.contextmanager
    def attached(self, conn: sa.Connection, payload: Scratch) -> Iterator[None]:
        """Attach the payload's slot; call outside a transaction (SQLite refuses ATTACH in one)."""
        raw = conn.connection.driver_connection
        raw.execute(f"ATTACH DATABASE ? AS {ALIAS}", (payload.path,))
        try:
            yield
        finally:
            try:
                raw.execute(f"DETACH DATABASE {ALIAS}")
            except sqlite3.Error:
                conn.invalidate()  # never hand a connection with a stale attachment back to the pool

    def insert_events(self, conn: sa.Connection, payload: Scratch) -> int:
        raw = conn.connection.driver_connection
        before = raw.total_changes
        raw.execute(payload.sql)
        return raw.total_changes - before

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
            directory, self._dir = self._dir, None
            lock_fd, self._dir_lock_fd = self._dir_lock_fd, None
        for slot in free:
            slot.discard()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)


def new_writer() -> SQLiteWriter:
    return SQLiteWriter()
