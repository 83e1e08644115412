"""MySQL/MariaDB bulk path: multi-row ``INSERT ... VALUES (...),(...)`` built by polars.

The statement text is produced column-wise (quoting, NULLs, number formatting) by polars
expressions instead of escaping every value in Python, which is what makes it fast; the
quoting assumes the session sql_mode set by engine.py (backslash escapes on, no ANSI_QUOTES).
Constants are sent once as user variables. ``ON DUPLICATE KEY UPDATE id = id`` skips
duplicates without INSERT IGNORE's side effect of turning NOT NULL violations into warnings;
with FOUND_ROWS off (engine.py) such a no-op counts 0 affected rows, an insert 1.
"""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from voxtrail.store.bulk import TS_FORMAT, EncodeNothing, PreparedBatch

#: Bytes of row literals per statement: well under the smallest common max_allowed_packet (4 MB).
_CHUNK_BYTES = 2_000_000


def _q(name: str) -> str:
    return "`" + name + "`"


def _string_literal(expr: pl.Expr) -> pl.Expr:
    escaped = (
        expr.str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all("'", "\\'", literal=True)
        .str.replace_all("\x00", "\\0", literal=True)
    )
    return pl.concat_str([pl.lit("'"), escaped, pl.lit("'")])


def _literal(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.Datetime:
        out = pl.concat_str([pl.lit("'"), col.dt.strftime(TS_FORMAT), pl.lit("'")])
    elif dtype.is_float():
        # MySQL has no infinity or NaN: they are stored as NULL, as SQLite does with NaN.
        out = pl.when(col.is_finite()).then(col.cast(pl.Utf8))
    elif dtype.is_integer():
        out = col.cast(pl.Utf8)
    else:
        out = _string_literal(col.cast(pl.Utf8))
    return out.fill_null("NULL")


class MySQLWriter(EncodeNothing):
    def insert_events(self, conn: sa.Connection, batch: PreparedBatch) -> int:
        frame = batch.frame
        if "request_id" in frame.columns:
            frame = frame.sort("request_id")  # same lock order in concurrent writers
        cols = frame.columns
        consts = list(batch.constants)
        raw = conn.connection.driver_connection
        cur = raw.cursor()
        try:
            if consts:
                cur.execute(
                    "SET " + ", ".join(f"@vx_c{i} = %s" for i in range(len(consts))),
                    [batch.constants[c] for c in consts],
                )
            parts: list[pl.Expr] = [pl.lit("(")]
            for i, name in enumerate(cols):
                parts += [pl.lit(","), _literal(name, frame.schema[name])] if i else [_literal(name, frame.schema[name])]
            parts += [pl.lit(f",@vx_c{i}") for i in range(len(consts))]
            parts.append(pl.lit(")"))
            rows = frame.select(pl.concat_str(parts).alias("row"))
            rows = rows.with_columns(
                (pl.col("row").str.len_bytes().cum_sum() // _CHUNK_BYTES).alias("chunk")
            ).group_by("chunk", maintain_order=True).agg(pl.col("row").str.join(","))
            head = f"INSERT INTO tts_events ({', '.join(_q(c) for c in [*cols, *consts])}) VALUES "
            tail = " ON DUPLICATE KEY UPDATE id = id"
            inserted = 0
            for values in rows["row"]:
                cur.execute(head + values + tail)  # no args: pymysql does no %-formatting
                inserted += cur.rowcount
        finally:
            cur.close()
        return inserted


WRITER = MySQLWriter()
