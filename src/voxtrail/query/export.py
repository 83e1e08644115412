"""Exports of individual events (every field) as NDJSON or CSV, streamed.

An export happens in two steps so that the access log can say exactly how many rows it holds
before the first byte leaves: :func:`export_ids` picks the matching rows (ids only, newest first,
at most ``limit``), then :func:`export_rows` reads them in chunks of :data:`CHUNK` while they are
sent. The filters are the event list's (:func:`voxtrail.query.events.conditions`), and so is
decryption: encrypted fields come decrypted for the auditors and admins who may export, a value
that cannot be decrypted is the events module's ``⚠ not decrypted`` marker (NDJSON rows then
carry ``decryption_errors``), and a text search is refused while ``text_input`` is encrypted.

CSV cells of text that start with ``= + - @`` (or a tab / carriage return) get a leading ``'`` so
that a spreadsheet shows them instead of running them as formulas: event texts are user input.
NDJSON is exact.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Iterator

import sqlalchemy as sa

from voxtrail.event import FIELD_NAMES
from voxtrail.keys import ENCRYPTABLE_FIELDS
# The events module's read-side decryption, so an export reveals exactly what the event pages do
# (the same keys, the same markers).
from voxtrail.query.events import (
    FiltersLike, conditions, jsonable, read_protection, refuse_encrypted_search, validate_search, validate_user,
)
from voxtrail.store.schema import tts_events

FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
COLUMNS = (*FIELD_NAMES, "ingested_at")
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
CHUNK = 1_000
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_ids(db: sa.Engine | Any, filters: FiltersLike | None, *, search: str | None = None,
               user: str | None = None, limit: int = DEFAULT_LIMIT) -> tuple[list[int], bool]:
    """Ids of the matching events, newest first, at most ``limit``; and whether more matched.
    ``db`` is the Store (its keyring decrypts) or an engine, as for the event list."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT:,}")
    engine, protection = read_protection(db)
    search, user = validate_search(search), validate_user(user)
    refuse_encrypted_search(search, protection)
    c = tts_events.c
    query = (sa.select(c.id).where(*conditions(filters, search=search, user=user))
             .order_by(c.ts.desc(), c.id.desc()).limit(limit + 1))
    with engine.connect() as conn:
        ids = list(conn.execute(query).scalars())
    return ids[:limit], len(ids) > limit


def export_rows(db: sa.Engine | Any, ids: list[int]) -> Iterator[dict[str, Any]]:
    """Every field of the events ``ids``, in that order, decrypted.

    A chunk is a run of consecutive ids of the export's order, so ordering each chunk the same
    way keeps the whole order. A connection is held per chunk only.
    """
    engine, protection = read_protection(db)
    encrypted = {name: name for name in ENCRYPTABLE_FIELDS}
    c = tts_events.c
    for start in range(0, len(ids), CHUNK):
        query = (sa.select(*(c[name] for name in COLUMNS)).where(c.id.in_(ids[start:start + CHUNK]))
                 .order_by(c.ts.desc(), c.id.desc()))
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            yield protection.reveal(row, encrypted)


def ndjson_lines(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for row in rows:
        yield (json.dumps(jsonable(row), ensure_ascii=False, default=str) + "\n").encode("utf-8")


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """A header line, then one line per row (JSON fields as JSON text, null as an empty cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        row = jsonable(row)
        writer.writerow([_cell(row[name]) for name in COLUMNS])
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():  # only the header: no rows
        yield buffer.getvalue().encode("utf-8")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def encode(rows: Iterable[dict[str, Any]], fmt: str) -> Iterator[bytes]:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return ndjson_lines(rows) if fmt == "ndjson" else csv_lines(rows)
