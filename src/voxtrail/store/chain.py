"""The hash chain: every write appends a link that covers the rows it inserted.

Two levels, so the cost stays in vectorised code (issue 5 asks for < 15% of import throughput):

* ``row_hash`` (a column of ``tts_events``): SHA-256 of the row's content in a canonical form
  (encrypted fields as plaintext, so key rotation leaves it valid) and of the ``request_id`` of
  the row written just before it in the same write. It is computed for a whole batch at once
  (polars + polars-hash), before encryption, in ``Store.encode``.
* a link (``voxtrail_chain``): the id range a write inserted, how many rows, the SHA-256 of their
  row hashes in id order, and the previous link's hash. Rewriting any row therefore means
  rewriting its link and every later link, which a checkpoint kept elsewhere
  (``voxtrail verify --export``) exposes.

Retention (store/purge.py) removes rows but keeps, per link, what verification needs: a *gap*
with the removed rows' hashes and the last removed ``request_id``; a link whose rows are all gone
is marked purged and still chains. See docs/integrity.md.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import polars as pl
import polars_hash  # noqa: F401  (registers the .chash expression namespace)
import sqlalchemy as sa

from voxtrail.event import FIELDS, FIELDS_BY_NAME, polars_schema
from voxtrail.store.schema import chain_links, voxtrail_state

ZERO = "0" * 64
VERSION = "vx1"
#: The fields a row hash covers, in a fixed order: everything but the hash itself.
CONTENT_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.name != "row_hash")
_INDEX = {name: i for i, name in enumerate(CONTENT_FIELDS)}
#: A separator cannot be faked from inside a value: string values double it (see _text).
SEP = "\x1f"
_PREV = "p"  # marks the previous row's request_id, appended after the content


def canonical_json(text: str | bytes | None) -> str | None:
    """JSON text with sorted keys: PostgreSQL (jsonb) and MySQL (JSON) reorder keys and spaces.

    At write time a JSON column is the text the store sends; at verify time it is the value the
    database gives back (:func:`canonical_value`): both give the same text, whatever the value
    (a JSON string that looks like an object stays a string)."""
    return None if text is None else canonical_value(orjson.loads(text))


def canonical_value(value: Any) -> str:
    """A decoded JSON value's canonical text (see :func:`canonical_json`).

    Integers beyond 64 bits are taken as doubles: PostgreSQL stores JSON numbers as numeric and
    gives a whole number written as ``1e+20`` back as the integer 100000000000000000000 (the
    store writes smaller ones, from 1e16, as integers already: transforms/normalize.py)."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # an integer orjson cannot write (from 2**64)
        text = ""
    if not text or _LONG_DIGITS.search(text):  # a value of 19 or more digits: maybe such an integer
        text = orjson.dumps(_as_doubles(value), option=orjson.OPT_SORT_KEYS).decode()
    return text


_LONG_DIGITS = re.compile(r"[0-9]{19}")


def _as_doubles(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return float(value)
    if isinstance(value, dict):
        return {k: _as_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_doubles(v) for v in value]
    return value


#: Stands for NULL (and for a field the batch does not carry). Only a value that is exactly one NUL
#: character would hash alike, and PostgreSQL cannot store NUL in text at all.
NULL = "\x00"


def _escape(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_all(SEP, SEP + SEP, literal=True)


def _field_expr(name: str, expr: pl.Expr, escape: bool) -> pl.Expr:
    kind = FIELDS_BY_NAME[name].kind
    if kind in ("string", "text"):
        value = _escape(expr) if escape else expr
    elif kind == "json":
        value = expr.map_elements(canonical_json, return_dtype=pl.Utf8, skip_nulls=True)
        value = _escape(value) if escape else value
    elif kind == "timestamp":
        value = expr.dt.epoch("us").cast(pl.Utf8)
    else:
        value = expr.cast(pl.Utf8)
    # A string column without nulls passes through untouched (no copy) until the final concat.
    return value.fill_null(NULL)


@lru_cache(maxsize=256)
def _constant_text(name: str, value: Any) -> str:
    """A constant's part, formatted once by the same expression a column would use."""
    dtype = polars_schema([name])[name]
    return pl.select(_field_expr(name, pl.lit(value, dtype=dtype), escape=True)).item()


def _parts(frame: pl.DataFrame, constants: dict[str, Any], escape: bool) -> list[pl.Expr]:
    """Every content field in a fixed order: one part per column the batch carries, runs of
    constants and absent fields (NULL) joined into one literal; concat_str adds separators."""
    parts: list[pl.Expr] = []
    pending = [VERSION]
    for name in CONTENT_FIELDS:
        if name in frame.columns:
            if pending:
                parts.append(pl.lit(SEP.join(pending)))
                pending = []
            parts.append(_field_expr(name, pl.col(name), escape))
        else:
            value = constants.get(name)
            pending.append(NULL if value is None else _constant_text(name, value))
    if pending:
        parts.append(pl.lit(SEP.join(pending)))
    return parts


def canonical(frame: pl.DataFrame, constants: dict[str, Any], prev_request_id: pl.Expr | None = None) -> pl.Series:
    """Each row's canonical text: the version, every content field, then (for hashing) the
    previous row's request_id, separated by SEP. A value holding SEP has it doubled, so no value
    can fake a field boundary; as values almost never hold it, the text is built without
    escaping first and rebuilt with it only when a row shows more separators than fields."""
    def build(escape: bool) -> pl.Series:
        parts = _parts(frame, constants, escape)
        if prev_request_id is not None:
            prev = _escape(prev_request_id) if escape else prev_request_id
            parts += [pl.lit(_PREV), prev.fill_null(NULL)]
        return frame.select(pl.concat_str(parts, separator=SEP).alias("canonical")).to_series()

    text = build(escape=False)
    expected = len(CONTENT_FIELDS) + (2 if prev_request_id is not None else 0)
    if (text.str.count_matches(SEP, literal=True) != expected).any():
        text = build(escape=True)
    return text


def content_texts(frame: pl.DataFrame) -> list[str]:
    """The canonical content of rows read back from the database (all columns present)."""
    return canonical(frame, {}).to_list()


def hashes(frame: pl.DataFrame, constants: dict[str, Any]) -> pl.Series:
    """Row hashes of rows in write order: each bound to the request_id of the row before."""
    text = canonical(frame, constants, pl.col("request_id").shift(1))
    return text.to_frame().select(pl.col("canonical").chash.sha2_256().alias("row_hash")).to_series()


@dataclass(frozen=True)
class Sealed:
    """A sealed batch (rows in write order), kept until its write commits: a write that finds
    some rows already stored re-binds the rows it did insert from this plaintext frame."""

    frame: pl.DataFrame
    constants: dict[str, Any]

    @property
    def row_hashes(self) -> pl.Series:
        return self.frame["row_hash"]


def seal(frame: pl.DataFrame, constants: dict[str, Any]) -> Sealed:
    """Add ``row_hash`` to a prepared batch, rows in write order; one vectorised pass."""
    plain = frame.drop("row_hash", strict=False)
    return Sealed(plain.with_columns(hashes(plain, constants)), constants)


def digest(row_hashes: list[str] | pl.Series) -> str:
    joined = row_hashes.str.join("").item() if isinstance(row_hashes, pl.Series) else "".join(row_hashes)
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


def link_hash(seq: int, first_id: int, last_id: int, row_count: int, digest_hex: str, prev_hash: str) -> str:
    text = f"{VERSION}|{seq}|{first_id}|{last_id}|{row_count}|{digest_hex}|{prev_hash}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Link:
    seq: int
    first_id: int
    last_id: int
    row_count: int
    digest: str
    prev_hash: str
    link_hash: str
    purged_at: Any = None

    @property
    def expected_hash(self) -> str:
        return link_hash(self.seq, self.first_id, self.last_id, self.row_count, self.digest, self.prev_hash)


def last_link(conn: sa.Connection) -> Link:
    row = conn.execute(sa.select(chain_links).order_by(chain_links.c.seq.desc()).limit(1)).mappings().first()
    if row is None:
        raise RuntimeError("the chain has no genesis link: the database was not migrated by voxtrail")
    return link_from_row(row)


def link_from_row(row) -> Link:
    return Link(int(row["seq"]), int(row["first_id"]), int(row["last_id"]), int(row["row_count"]), row["digest"],
                row["prev_hash"], row["link_hash"], row["purged_at"])


def append_link(conn: sa.Connection, first_id: int, last_id: int, row_count: int, digest_hex: str) -> Link:
    """Append the link of a write; the caller holds the writers' lock (rollups.mark)."""
    prev = last_link(conn)
    if first_id <= prev.last_id:
        from voxtrail.store.engine import StoreError

        # MySQL before 8.0 resets AUTO_INCREMENT to max(id) + 1 at restart: after a purge of
        # the newest rows, ids would be reused and the chain's id ranges would overlap.
        raise StoreError(f"the database handed out id {first_id} again (link {prev.seq} ends at id {prev.last_id}): "
                         f"raise tts_events' AUTO_INCREMENT above {prev.last_id} and retry")
    seq = prev.seq + 1
    link = Link(seq, first_id, last_id, row_count, digest_hex, prev.link_hash, "")
    values = {"seq": seq, "first_id": first_id, "last_id": last_id, "row_count": row_count, "digest": digest_hex,
              "prev_hash": prev.link_hash, "link_hash": link.expected_hash}
    conn.execute(chain_links.insert().values(**values))
    return link_from_row({**values, "purged_at": None})


def genesis(conn: sa.Connection) -> None:
    """The first link (migration 0004): rows stored before it are not covered by the chain."""
    from voxtrail.store.schema import tts_events

    last_id, count = conn.execute(sa.select(sa.func.max(tts_events.c.id), sa.func.count())).one()
    last_id, count = int(last_id or 0), int(count or 0)
    values = {"seq": 1, "first_id": 0, "last_id": last_id, "row_count": count, "digest": ZERO, "prev_hash": ZERO}
    values["link_hash"] = link_hash(1, 0, last_id, count, ZERO, ZERO)
    conn.execute(chain_links.insert().values(**values))
    conn.execute(voxtrail_state.insert().values(
        name="chain", value=orjson.dumps({"database_id": str(uuid.uuid4()), "version": VERSION}).decode()))


def link_write(conn: sa.Connection, after_id: int, inserted: int, size: int, sealed: Sealed | None) -> Link:
    """Append the link for the rows this transaction inserted (ids above ``after_id``).

    When some rows of the batch were duplicates, the rows inserted are not the batch: each
    inserted row is bound again to the one inserted before it, and its hash updated."""
    from voxtrail.store.schema import tts_events

    if sealed is None:
        raise RuntimeError("a batch reached the store without row hashes: encode it with Store.encode")
    # Two index lookups: min()/max() with a range condition would scan the inserted rows.
    first_id = conn.execute(
        sa.select(tts_events.c.id).where(tts_events.c.id > after_id).order_by(tts_events.c.id).limit(1)).scalar_one()
    last_id = conn.execute(sa.select(sa.func.max(tts_events.c.id))).scalar_one()
    hashes = sealed.row_hashes if inserted == size else _rebind(conn, after_id, sealed)
    return append_link(conn, int(first_id), int(last_id), inserted, digest(hashes))


def _rebind(conn: sa.Connection, after_id: int, sealed: Sealed) -> pl.Series:
    from voxtrail.store.schema import tts_events

    rows = conn.execute(
        sa.select(tts_events.c.id, tts_events.c.request_id).where(tts_events.c.id > after_id).order_by(tts_events.c.id)
    ).all()
    stored = pl.DataFrame({"id": [r[0] for r in rows], "request_id": [r[1] for r in rows]},
                          schema={"id": pl.Int64, "request_id": pl.Utf8})
    plain = sealed.frame.drop("row_hash").unique("request_id", keep="first", maintain_order=True)
    bound = stored.join(plain, on="request_id", how="left", maintain_order="left")
    bound = bound.with_columns(hashes(bound.drop("id"), sealed.constants))
    if len(bound) != len(rows) or bound["ts"].null_count():
        raise RuntimeError("rows appeared in tts_events during a write that holds the writers' lock")
    conn.execute(
        sa.update(tts_events).where(tts_events.c.id == sa.bindparam("_id")).values(row_hash=sa.bindparam("_hash")),
        [{"_id": i, "_hash": h} for i, h in zip(bound["id"].to_list(), bound["row_hash"].to_list())],
    )
    return bound["row_hash"]


def row_hash_of(content: str, prev_request_id: str | None) -> str:
    """One row's hash in plain Python: the same bytes :func:`hashes` hashes (a test pins it)."""
    prev = NULL if prev_request_id is None else prev_request_id.replace(SEP, SEP + SEP)
    return hashlib.sha256(f"{content}{SEP}{_PREV}{SEP}{prev}".encode("utf-8")).hexdigest()
