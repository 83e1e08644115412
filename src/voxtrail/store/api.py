"""The store: open a database by URL, write batches atomically, read checkpoints."""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa

from voxtrail import config
from voxtrail.event import EventBatch, Reject
from voxtrail.store import chain, rollups
from voxtrail.store.bulk import EncodedBatch, PreparedBatch, close_writer, outside_transaction, prepare, writer_for
from voxtrail.store.checkpoints import Checkpoint, load_checkpoints, save_checkpoint, save_rejects
from voxtrail.store.engine import StoreError, check_connection, first_line, make_engine, normalize_url
from voxtrail.store.migrate import migrate
from voxtrail.store.protection import Protection
from voxtrail.store.purge import HorizonCache
from voxtrail.transforms.normalize import excerpt
from voxtrail.store.schema import tts_events

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
    hash, to append the write's link to the chain (store/chain.py)."""

    sealed: chain.Sealed | None = None


@dataclass
class WriteResult:
    inserted: int
    duplicates: int
    rejected: int  # rejects in the batch (stored now, or already stored by an earlier delivery)


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

    def encode(self, batch: EventBatch) -> EncodedBatch:
        """Validate and encode a batch for this store's database: pure CPU work that may run
        in another thread than :meth:`write` (the importer parses and encodes ahead)."""
        prepared = prepare(batch)
        prepared, expired = self._drop_expired(prepared)
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
        return EncodedEvents(self.dialect, prepared.size, payload, [*batch.rejects, *expired], delta, sealed)

    def _drop_expired(self, prepared: PreparedBatch) -> tuple[PreparedBatch, list[Reject]]:
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
        reason = "event: older than the retention horizon (events of that age were purged; docs/retention.md)"
        rejects = [Reject(int(row.get("source_offset") or -1), reason, excerpt(row))
                   for row in gone.iter_rows(named=True)]
        return PreparedBatch(prepared.frame.filter(~flags), prepared.constants), rejects

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
        """
        encoded = batch if isinstance(batch, EncodedBatch) else self.encode(batch)
        if encoded.dialect != self.dialect:
            raise ValueError(f"batch encoded for {encoded.dialect}, store is {self.dialect}")
        sid = stream_id or (checkpoint.stream_id if checkpoint else "")
        options = {"vx_immediate": True} if self.dialect == "sqlite" else {}
        for attempt in range(_ATTEMPTS):
            try:
                with (
                    self.engine.connect().execution_options(**options) as conn,
                    outside_transaction(self._writer, conn, encoded.payload),
                    conn.begin(),
                ):
                    inserted = 0
                    if encoded.size:
                        # Rollups grow by exactly the rows this transaction inserts (store/rollups.py).
                        last_id = rollups.mark(conn, self.dialect)
                        inserted = self._writer.insert_events(conn, encoded.payload)
                        if inserted == encoded.size and getattr(encoded, "rollup_delta", None) is not None:
                            rollups.apply_delta(conn, self.dialect, encoded.rollup_delta,
                                                getattr(encoded.payload, "rollup_sources", None))
                        elif inserted:
                            rollups.apply(conn, self.dialect, last_id)
                        if inserted:
                            chain.link_write(conn, last_id, inserted, encoded.size, getattr(encoded, "sealed", None))
                    save_rejects(conn, self.dialect, encoded.rejects, sid, source_file)
                    if checkpoint is not None:
                        save_checkpoint(conn, self.dialect, checkpoint)
                break
            except self._errors as exc:
                if attempt + 1 < _ATTEMPTS and _retryable(exc):
                    time.sleep(0.05 * (2**attempt) * (1 + random.random()))
                    continue
                raise StoreError(f"writing to {self.display_url} failed: {first_line(exc)}") from exc
        return WriteResult(inserted, encoded.size - inserted, len(encoded.rejects))

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
