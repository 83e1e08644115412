"""The bulk-insert interface shared by the per-dialect writers, and the batch checks they rely on.

``Store.write`` is one code path: it validates a batch here (so every dialect accepts and refuses
the same batches), then hands it to the writer of its dialect inside one transaction. Writers
only have to turn columns into the fastest statement their database offers and report how many
rows were new; duplicates (an existing request_id) are skipped, never errors.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import orjson
import polars as pl
import sqlalchemy as sa

from voxtrail.event import FIELD_NAMES, FIELDS_BY_NAME, EventBatch, polars_schema, unknown_fields
from voxtrail.transforms.normalize import Refusals, check

#: Text format of timestamps for SQLite (what SQLAlchemy's DateTime writes and reads back) and
#: for MySQL/PostgreSQL literals and COPY.
TS_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"


@dataclass(frozen=True)
class PreparedBatch:
    """A validated batch: ``frame`` columns and ``constants`` keys in FIELDS order, disjoint."""

    frame: pl.DataFrame
    constants: dict[str, Any]

    @property
    def size(self) -> int:
        return self.frame.height

    @property
    def columns(self) -> list[str]:
        return self.frame.columns

    def kind(self, name: str) -> str:
        return FIELDS_BY_NAME[name].kind


class BulkWriter(Protocol):
    """Optional extras, looked up with getattr: ``attached(conn, payload)``, a context manager
    entered before the transaction begins, and ``close()``, called by ``Store.close``."""

    def encode(self, batch: PreparedBatch, rollup_delta: dict | None = None) -> Any:
        """Turn the batch into what ``insert_events`` sends (rows, statement text): CPU work
        only, so an importer can do it in its parsing thread while the previous batch commits.

        A writer may also stage the batch's rollup increments beside its rows; it then names
        where, as ``payload.rollup_sources`` ({rollup table: table to upsert from})."""

    def insert_events(self, conn: sa.Connection, encoded: Any) -> int:
        """Insert the rows inside ``conn``'s open transaction; return how many were new."""


class EncodeNothing:
    """For writers whose fastest path streams straight from the frame."""

    def encode(self, batch: PreparedBatch, rollup_delta: dict | None = None) -> PreparedBatch:
        return batch


@dataclass(frozen=True)
class EncodedBatch:
    """A batch validated and encoded for one dialect, with what the write also stores."""

    dialect: str
    size: int
    payload: Any
    rejects: list


_MODULES = {"sqlite": "bulk_sqlite", "postgresql": "bulk_postgresql", "mysql": "bulk_mysql"}


def writer_for(dialect: str) -> BulkWriter:
    module = importlib.import_module(f"voxtrail.store.{_MODULES[dialect]}")
    # A writer that holds resources (SQLite's scratch files) gives each store its own.
    return module.new_writer() if hasattr(module, "new_writer") else module.WRITER


def outside_transaction(writer: BulkWriter, conn: sa.Connection, payload: Any):
    """What the writer sets up on ``conn`` before the transaction begins (SQLite: ATTACH)."""
    hook = getattr(writer, "attached", None)
    return hook(conn, payload) if hook is not None and payload is not None else contextlib.nullcontext()


def close_writer(writer: BulkWriter) -> None:
    close = getattr(writer, "close", None)
    if close is not None:
        close()


def _utc_naive(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _constant(name: str, value: Any) -> Any:
    kind = FIELDS_BY_NAME[name].kind
    if value is None:
        return None
    if kind == "json" and not isinstance(value, str):
        return orjson.dumps(value).decode()
    if kind == "timestamp":
        if not isinstance(value, datetime):
            raise ValueError(f"constant {name!r} must be a datetime, got {type(value).__name__}")
        return _utc_naive(value)
    return value


def prepare(batch: EventBatch) -> tuple[PreparedBatch, Refusals]:
    """The batch in FIELDS order and event dtypes, cleaned and checked before the database sees
    anything, and (reject, request_id) for each event no database could store as it is.

    Every event must have the same fate on every database (SQLite would store an over-long
    value that PostgreSQL and MySQL refuse, PostgreSQL refuses a NUL the others keep):
    :func:`voxtrail.transforms.normalize.check` decides it, per event. A batch whose columns are
    not event fields is a programming error (ValueError), not a data error.
    """
    frame = batch.frame
    names = [*frame.columns, *batch.constants]
    bad = unknown_fields(names)
    if bad:
        raise ValueError(f"unknown event field(s): {', '.join(sorted(bad))}")
    both = set(frame.columns) & set(batch.constants)
    if both:
        raise ValueError(f"field(s) both in the frame and in constants: {', '.join(sorted(both))}")
    for name, dtype in frame.schema.items():
        # A tz-aware column is converted, never reinterpreted: the table is UTC-naive.
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            frame = frame.with_columns(pl.col(name).dt.convert_time_zone("UTC").dt.replace_time_zone(None))
    ordered = [n for n in FIELD_NAMES if n in frame.columns]
    frame = frame.select(ordered).cast(polars_schema(ordered))
    constants = {n: _constant(n, batch.constants[n]) for n in FIELD_NAMES if n in batch.constants}
    for name, value in constants.items():
        length = FIELDS_BY_NAME[name].length
        if length is not None and isinstance(value, str) and len(value) > length:
            raise ValueError(f"constant {name!r} has {len(value)} characters; the column takes {length}")
    frame, constants, refused = check(frame, constants)
    return PreparedBatch(frame, constants), refused
