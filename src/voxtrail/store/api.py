"""The store: open a database by URL, write batches atomically, read checkpoints."""

from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import polars as pl
import sqlalchemy as sa

from voxtrail import config
from voxtrail.event import EventBatch, Reject
from voxtrail.store import chain, rollups
from voxtrail.store.bulk import EncodedBatch, PreparedBatch, close_writer, outside_transaction, prepare, writer_for
from voxtrail.store.checkpoints import Checkpoint, load_checkpoints, save_checkpoint, save_rejects
from voxtrail.store.engine import (
    StoreError, check_connection, first_line, is_data_error, make_engine, normalize_url,
)
from voxtrail.store.migrate import migrate
from voxtrail.store.protection import Protection
from voxtrail.store.purge import HorizonCache, Retention, utcnow
from voxtrail.store.schema import tts_events
from voxtrail.transforms.normalize import Refusals, row_reject

log = logging.getLogger("voxtrail.store")
_UNSET = object()

_ATTEMPTS = 5
_sealers: dict[int, ThreadPoolExecutor] = {}


def _sealer() -> ThreadPoolExecutor:
    """A pool per process: a forked child inherits the parent's pool without its threads."""
    pid = os.getpid()
    if pid not in _sealers:
        _sealers.clear()
        _sealers[pid] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="voxtrail-seal")
    return _sealers[pid]
#: Transient conflicts between concurrent writers: PostgreSQL deadlock / serialization failure,
#: MySQL deadlock / lock wait timeout. The whole transaction is retried; it is idempotent.
_RETRY_SQLSTATES = {"40P01", "40001"}
_RETRY_MYSQL_CODES = {1213, 1205}


@dataclass(frozen=True)
class EncodedEvents(rollups.EncodedWithRollups):
    """What a write needs besides the payload: each row's request_id, canonical content and
    hash, to append the write's link to the chain (store/chain.py); and what the store itself
    quarantined or noticed while encoding."""

    sealed: chain.Sealed | None = None
    #: (request_id, reason) of the events the store refused (see :class:`WriteResult`).
    refused: tuple[tuple[str, str], ...] = ()
    #: Events stored now that the next purge removes: older than the configured retention.
    past_retention: int = 0


@dataclass
class WriteResult:
    inserted: int
    duplicates: int
    rejected: int  # rejects in the batch (stored now, or already stored by an earlier delivery)
    #: (request_id, reason) of the events the store quarantined itself, each a reject counted in
    #: ``rejected``: refused by its checks or by the database, or older than the retention horizon.
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: Events stored that are already older than the configured retention (docs/retention.md).
    past_retention: int = 0


class _DatabaseRefused(Exception):
    """The database refused a write for the values it carries (engine.is_data_error)."""


def _retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in _RETRY_MYSQL_CODES


class Store:
    def __init__(self, engine: sa.Engine, dialect: str, settings: config.Settings | None = None) -> None:
        self.engine = engine
        self.dialect = dialect
        self.settings = settings if settings is not None else config.load()
        self.protection = Protection(self.settings)
        self._horizon = HorizonCache()
        self._retention = _UNSET
        self.display_url = engine.url.render_as_string(hide_password=True)
        self._writer = writer_for(dialect)
        self._errors = (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error)

    @classmethod
    def open(cls, url: str | None = None, *, settings: config.Settings | None = None,
             pool_timeout: float | None = None) -> "Store":
        """Connect (failing fast with a StoreError) and bring the schema to the current version.

        ``settings`` (default: ``config.load()``, i.e. VOXTRAIL_* variables and ./voxtrail.toml)
        say which fields are encrypted and with which keys, so every path protects alike."""
        settings = settings if settings is not None else config.load()
        u, dialect = normalize_url(url or settings.db)
        engine = make_engine(u, dialect, pool_timeout)
        try:
            check_connection(engine, dialect)
            store = cls(engine, dialect, settings)
            try:
                migrate(engine, dialect)
            except store._errors as exc:
                raise StoreError(f"cannot prepare the schema in {store.display_url}: {first_line(exc)}") from exc
        except BaseException:
            engine.dispose()
            raise
        return store

    @property
    def retention(self):
        """The configured retention (store/purge.py's Retention), read once; None when it is off
        or its settings are wrong (the commands that apply it report that)."""
        if self._retention is _UNSET:
            try:
                self._retention = Retention.from_settings(self.settings)
            except config.ConfigError as exc:
                log.warning("retention settings ignored when counting events past retention: %s", exc)
                self._retention = None
        return self._retention

    def encode(self, batch: EventBatch) -> EncodedBatch:
        """Validate and encode a batch for this store's database: pure CPU work that may run
        in another thread than :meth:`write` (the importer parses and encodes ahead).

        Events no database could store as they are (transforms/normalize.py) and events older
        than the retention horizon become rejects, each keyed by its own offset or request_id."""
        prepared, refused = prepare(batch)
        prepared, expired = self._drop_expired(prepared)
        refused += expired
        encoded = self._encode_prepared(prepared, [*batch.rejects, *(reject for reject, _ in refused)])
        return replace(encoded, refused=tuple((rid, r.reason) for r, rid in refused if rid is not None),
                       past_retention=self._past_retention(prepared))

    def _encode_prepared(self, prepared: PreparedBatch, rejects: list[Reject]) -> "EncodedEvents":
        sealed = delta = None
        if prepared.size:
            frame = prepared.frame
            if self.dialect != "sqlite":
                # The PostgreSQL and MySQL writers insert in request_id order (concurrent writers
                # then lock rows in the same order); row hashes bind each row to the one before
                # it in insertion order, so seal in that order.
                frame = frame.sort("request_id")
            # Hashing and the rollup increments are independent polars work that releases the
            # GIL: run them side by side, so the seal does not lengthen the encoding thread.
            sealing = _sealer().submit(chain.seal, frame, prepared.constants)
            delta = rollups.batch_delta(prepared)
            sealed = sealing.result()
            prepared = self.protection.encrypt(PreparedBatch(sealed.frame, prepared.constants))
        try:
            payload = self._writer.encode(prepared, delta) if prepared.size else None
        except OSError as exc:  # SQLite's scratch space: a full or unwritable temp directory
            raise StoreError(
                f"cannot stage a batch for {self.display_url}: {exc.strerror or exc} "
                f"({getattr(exc, 'filename', None) or 'temporary directory'}); free space there or set TMPDIR"
            ) from exc
        return EncodedEvents(self.dialect, prepared.size, payload, rejects, delta, sealed)

    def _drop_expired(self, prepared: PreparedBatch) -> tuple[PreparedBatch, Refusals]:
        """Events older than what retention already removed are quarantined, not stored again:
        their rollups were kept, so storing them would count them twice (store/purge.py)."""
        if not prepared.size:
            return prepared, []
        horizon = self._horizon.get(self.engine)
        condition = horizon.expired(prepared.frame, prepared.constants)
        if condition is None:
            return prepared, []
        flags = prepared.frame.select(condition.fill_null(False)).to_series()
        if not flags.any():
            return prepared, []
        gone = prepared.frame.filter(flags)
        cut = ", ".join(f"{kind} events before {when:%Y-%m-%d %H:%M} UTC"
                        for kind, when in (("audit", horizon.audit), ("operations", horizon.operations)) if when)
        reason = (f"event: older than the retention horizon ({cut} were purged, and their rollups kept: "
                  "storing it would count it twice; docs/retention.md)")
        rejects = [(row_reject(row, reason), row.get("request_id")) for row in gone.iter_rows(named=True)]
        return PreparedBatch(prepared.frame.filter(~flags), prepared.constants), rejects

    def _past_retention(self, prepared: PreparedBatch) -> int:
        """How many of the batch's events the next purge removes (counted, stored all the same)."""
        retention = self.retention
        if not prepared.size or retention is None or (retention.audit is None and retention.operations is None):
            return 0
        condition = retention.cutoffs(utcnow()).expired(prepared.frame, prepared.constants)
        return 0 if condition is None else int(prepared.frame.select(condition.fill_null(False).sum()).item())

    def write(
        self,
        batch: EventBatch | EncodedBatch,
        checkpoint: Checkpoint | None = None,
        *,
        stream_id: str = "",
        source_file: str | None = None,
    ) -> WriteResult:
        """Store events, rejects and the checkpoint in one transaction: all of it or none.

        Events whose request_id is already stored are skipped (``duplicates``), so delivering a
        batch again is harmless. Rejects are keyed by (stream_id, offset); ``stream_id``
        defaults to the checkpoint's.

        A database that refuses the batch for the values it carries (a data error, as opposed to
        an outage: engine.is_data_error) never fails the write: the batch is split until the
        events it refuses are isolated, each becomes a reject with the database's reason, and
        the others are stored. Those parts are then separate transactions, the rejects and the
        checkpoint committed last, so a crash in between stores nothing twice and loses nothing
        (the next delivery skips what is stored). Only an outage raises (StoreError): retry it.
        """
        encoded = batch if isinstance(batch, EncodedBatch) else self.encode(batch)
        if encoded.dialect != self.dialect:
            raise ValueError(f"batch encoded for {encoded.dialect}, store is {self.dialect}")
        sid = stream_id or (checkpoint.stream_id if checkpoint else "")
        refused = list(getattr(encoded, "refused", ()))
        try:
            inserted = self._transaction(encoded, encoded.rejects, checkpoint, sid, source_file)
            rejected = len(encoded.rejects)
        except _DatabaseRefused as exc:
            sealed = getattr(encoded, "sealed", None)
            if sealed is None:  # the database refused our own rows (rejects, checkpoint): a bug
                raise StoreError(f"writing to {self.display_url} failed: {exc}") from exc
            log.warning("%s refused a batch of %d events (%s): isolating the events it refuses",
                        self.display_url, encoded.size, exc)
            inserted, poison = self._isolate(sealed.frame.drop("row_hash"), sealed.constants, str(exc),
                                             sid, source_file)
            rejects = [*encoded.rejects, *(reject for reject, _ in poison)]
            refused += [(rid, reject.reason) for reject, rid in poison if rid is not None]
            try:
                self._transaction(None, rejects, checkpoint, sid, source_file)
            except _DatabaseRefused as again:
                raise StoreError(f"writing the rejects to {self.display_url} failed: {again}") from again
            rejected = len(rejects)
        past = getattr(encoded, "past_retention", 0)
        return WriteResult(inserted, encoded.size - inserted - (rejected - len(encoded.rejects)), rejected,
                           refused, past)

    def _isolate(self, frame: pl.DataFrame, constants: dict, reason: str, sid: str,
                 source_file: str | None) -> tuple[int, list[tuple[Reject, str | None]]]:
        """Write ``frame`` (refused as a whole with ``reason``) in halves, recursively: returns
        the rows inserted and a reject for each event the database refuses on its own."""
        if frame.height == 1:
            row = frame.row(0, named=True)
            return 0, [(row_reject({**constants, **row}, f"event: the database refused it: {reason}"),
                        row.get("request_id"))]
        inserted, poison = 0, []
        middle = frame.height // 2
        for part in (frame.slice(0, middle), frame.slice(middle)):
            encoded = self._encode_prepared(PreparedBatch(part, constants), [])
            try:
                inserted += self._transaction(encoded, [], None, sid, source_file)
            except _DatabaseRefused as exc:
                more, bad = self._isolate(part, constants, str(exc), sid, source_file)
                inserted += more
                poison += bad
        return inserted, poison

    def _transaction(self, encoded: "EncodedEvents | None", rejects: list[Reject], checkpoint: Checkpoint | None,
                     sid: str, source_file: str | None) -> int:
        """One write transaction (retried on a transient conflict); the rows inserted.

        Raises :class:`_DatabaseRefused` for a data error, :class:`StoreError` for anything else."""
        options = {"vx_immediate": True} if self.dialect == "sqlite" else {}
        payload = encoded.payload if encoded is not None else None
        for attempt in range(_ATTEMPTS):
            try:
                with (
                    self.engine.connect().execution_options(**options) as conn,
                    outside_transaction(self._writer, conn, payload),
                    conn.begin(),
                ):
                    inserted = 0
                    if encoded is not None and encoded.size:
                        # Rollups grow by exactly the rows this transaction inserts (store/rollups.py).
                        last_id = rollups.mark(conn, self.dialect)
                        inserted = self._writer.insert_events(conn, payload)
                        if inserted == encoded.size and getattr(encoded, "rollup_delta", None) is not None:
                            rollups.apply_delta(conn, self.dialect, encoded.rollup_delta,
                                                getattr(payload, "rollup_sources", None))
                        elif inserted:
                            rollups.apply(conn, self.dialect, last_id)
                        if inserted:
                            chain.link_write(conn, last_id, inserted, encoded.size, getattr(encoded, "sealed", None))
                    save_rejects(conn, self.dialect, rejects, sid, source_file)
                    if checkpoint is not None:
                        save_checkpoint(conn, self.dialect, checkpoint)
                return inserted
            except (*self._errors, UnicodeError, OverflowError) as exc:
                if is_data_error(exc):
                    raise _DatabaseRefused(first_line(exc)) from exc
                if attempt + 1 < _ATTEMPTS and _retryable(exc):
                    time.sleep(0.05 * (2**attempt) * (1 + random.random()))
                    continue
                raise StoreError(f"writing to {self.display_url} failed: {first_line(exc)}") from exc
        raise AssertionError("unreachable")

    @property
    def keyring(self):
        """The keys (voxtrail.keys.Keyring) or None when none are configured; never created here."""
        return self.protection.keyring(create=False)

    @property
    def encrypt_fields(self) -> tuple[str, ...]:
        return self.protection.fields

    def checkpoints(self) -> list[Checkpoint]:
        with self.engine.connect() as conn:
            return load_checkpoints(conn)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(tts_events)).scalar_one()

    def close(self) -> None:
        self.engine.dispose()
        close_writer(self._writer)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
