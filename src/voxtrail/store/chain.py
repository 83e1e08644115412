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
import uuid
from dataclasses import dataclass
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


def canonical_json(value: Any) -> str | None:
    """JSON with sorted keys: PostgreSQL (jsonb) and MySQL (JSON) reorder keys and spaces."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        value = orjson.loads(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _text(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_all(SEP, SEP + SEP, literal=True)


def _field_expr(name: str, expr: pl.Expr) -> pl.Expr:
    kind = FIELDS_BY_NAME[name].kind
    if kind in ("string", "text"):
        value = _text(expr)
    elif kind == "json":
        value = _text(expr.map_elements(canonical_json, return_dtype=pl.Utf8, skip_nulls=True))
    elif kind == "timestamp":
        value = expr.dt.epoch("us").cast(pl.Utf8)
    else:
        value = expr.cast(pl.Utf8)
    # Null fields are left out (concat_str ignores nulls), so which columns a batch happens to
    # carry does not matter: an absent column and a NULL hash the same.
    return pl.lit(f"{_INDEX[name]}=") + value


def content_expr(frame_columns: list[str], constants: dict[str, Any]) -> pl.Expr:
    """The canonical content of each row, as one string (version prefix included)."""
    schema = polars_schema(CONTENT_FIELDS)
    parts = [pl.lit(VERSION)]
    for name in CONTENT_FIELDS:
        if name in frame_columns:
            parts.append(_field_expr(name, pl.col(name)))
        elif constants.get(name) is not None:
            parts.append(_field_expr(name, pl.lit(constants[name], dtype=schema[name])))
    return pl.concat_str(parts, separator=SEP, ignore_nulls=True)


def hash_expr(content: pl.Expr, prev_request_id: pl.Expr) -> pl.Expr:
    bound = pl.concat_str([content, pl.lit(_PREV + "=") + _text(prev_request_id)], separator=SEP, ignore_nulls=True)
    return bound.chash.sha2_256()


def seal(frame: pl.DataFrame, constants: dict[str, Any]) -> tuple[pl.DataFrame, pl.Series]:
    """Add ``row_hash`` to a prepared batch (rows in write order); also return each row's
    canonical content, which a write with duplicates needs to re-bind the rows it did insert."""
    columns = [c for c in frame.columns if c != "row_hash"]
    content = frame.select(content_expr(columns, constants).alias("content")).to_series()
    hashed = pl.DataFrame({"content": content, "prev": frame["request_id"].shift(1)}).select(
        hash_expr(pl.col("content"), pl.col("prev")).alias("row_hash")
    ).to_series()
    out = frame.drop("row_hash", strict=False).with_columns(hashed)
    return out, content


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


@dataclass(frozen=True)
class Sealed:
    """A sealed batch, rows in write order."""

    request_ids: pl.Series
    contents: pl.Series
    row_hashes: pl.Series


def link_write(conn: sa.Connection, after_id: int, inserted: int, size: int, sealed: Sealed | None) -> Link:
    """Append the link for the rows this transaction inserted (ids above ``after_id``).

    When some rows of the batch were duplicates, the rows inserted are not the batch: each
    inserted row is bound again to the one inserted before it, and its hash updated."""
    from voxtrail.store.schema import tts_events

    first_id, last_id = conn.execute(
        sa.select(sa.func.min(tts_events.c.id), sa.func.max(tts_events.c.id)).where(tts_events.c.id > after_id)
    ).one()
    if sealed is None:
        raise RuntimeError("a batch reached the store without row hashes: encode it with Store.encode")
    hashes = sealed.row_hashes if inserted == size else _rebind(conn, after_id, sealed)
    return append_link(conn, int(first_id), int(last_id), inserted, digest(hashes))


def _rebind(conn: sa.Connection, after_id: int, sealed: Sealed) -> pl.Series:
    from voxtrail.store.schema import tts_events

    rows = conn.execute(
        sa.select(tts_events.c.id, tts_events.c.request_id).where(tts_events.c.id > after_id).order_by(tts_events.c.id)
    ).all()
    stored = pl.DataFrame({"id": [r[0] for r in rows], "request_id": [r[1] for r in rows]},
                          schema={"id": pl.Int64, "request_id": pl.Utf8})
    batch = pl.DataFrame({"request_id": sealed.request_ids, "content": sealed.contents}).unique(
        "request_id", keep="first", maintain_order=True)
    bound = stored.join(batch, on="request_id", how="left", maintain_order="left").with_columns(
        hash_expr(pl.col("content"), pl.col("request_id").shift(1)).alias("row_hash"))
    if bound["content"].null_count():
        raise RuntimeError("rows appeared in tts_events during a write that holds the writers' lock")
    conn.execute(
        sa.update(tts_events).where(tts_events.c.id == sa.bindparam("_id")).values(row_hash=sa.bindparam("_hash")),
        [{"_id": i, "_hash": h} for i, h in zip(bound["id"].to_list(), bound["row_hash"].to_list())],
    )
    return bound["row_hash"]


def row_hash_of(content: str, prev_request_id: str | None) -> str:
    """One row's hash in plain Python: the same bytes :func:`hash_expr` hashes (a test pins it)."""
    text = content if prev_request_id is None else f"{content}{SEP}{_PREV}={prev_request_id.replace(SEP, SEP + SEP)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
