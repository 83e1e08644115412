"""PostgreSQL bulk path: COPY into a temporary staging table, then one INSERT ... SELECT.

COPY is the only way to reach PostgreSQL's full ingest speed, but it cannot skip duplicates;
the INSERT from the staging table can (``ON CONFLICT DO NOTHING``) and also adds the constants
once as bound parameters. Rows go in request_id order so two concurrent importers take their
unique-index locks in the same order and cannot deadlock each other.
"""

from __future__ import annotations

import hashlib

import polars as pl
import sqlalchemy as sa

from voxtrail.store.bulk import TS_FORMAT, EncodeNothing, PreparedBatch
from voxtrail.store.schema import tts_events

_SLICE_ROWS = 100_000  # CSV is produced per slice to bound memory on huge batches


def _q(name: str) -> str:
    return '"' + name + '"'


class PostgreSQLWriter(EncodeNothing):
    def insert_events(self, conn: sa.Connection, batch: PreparedBatch) -> int:
        dialect = conn.dialect
        cols = batch.columns
        types = {c.name: c.type.compile(dialect=dialect) for c in tts_events.columns}
        # One staging table per column set, kept for the session; ON COMMIT DELETE ROWS empties it.
        stage = "vx_stage_" + hashlib.sha1(",".join(cols).encode()).hexdigest()[:16]
        col_list = ", ".join(_q(c) for c in cols)
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                f"({', '.join(f'{_q(c)} {types[c]}' for c in cols)}) ON COMMIT DELETE ROWS"
            )
            frame = self._clean(batch.frame)
            copy_sql = f"COPY {stage} ({col_list}) FROM STDIN (FORMAT csv, NULL '\\N')"
            with cur.copy(copy_sql) as copy:
                for part in frame.iter_slices(_SLICE_ROWS):
                    copy.write(part.write_csv(
                        include_header=False, quote_style="non_numeric", null_value="\\N",
                        datetime_format=TS_FORMAT,
                    ))
            consts = list(batch.constants)
            targets = ", ".join(_q(c) for c in [*cols, *consts])
            select = ", ".join([*(_q(c) for c in cols), *(f"CAST(%s AS {types[c]})" for c in consts)])
            order = "ORDER BY request_id " if "request_id" in cols else ""
            cur.execute(
                f"INSERT INTO tts_events ({targets}) SELECT {select} FROM {stage} "
                f"{order}ON CONFLICT (request_id) DO NOTHING",
                [batch.constants[c] for c in consts],
            )
            inserted = cur.rowcount
            cur.execute(f"TRUNCATE {stage}")  # a second write in this transaction starts empty
        return inserted

    @staticmethod
    def _clean(frame: pl.DataFrame) -> pl.DataFrame:
        # PostgreSQL text cannot hold NUL at all; U+FFFD keeps the rest of the value.
        text = [n for n, t in frame.schema.items() if t == pl.Utf8]
        return frame.with_columns(pl.col(text).str.replace_all("\x00", "\ufffd", literal=True)) if text else frame


WRITER = PostgreSQLWriter()
