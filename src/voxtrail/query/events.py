"""Individual events for auditors: a filtered, paginated list and one event with every field.

The same :class:`~voxtrail.query.filters.Filters` that scope the dashboard scope this list
(time range, node, model, version, emotion, control mode, status), plus two questions only an
auditor asks: who (``user``, an exact ``user_id``) and what (``search``, a case-insensitive
substring of the synthesised text, matched with SQL ``LIKE``: ``%`` and ``_`` in the search are
taken literally, and a search cannot use an index, so on a large table narrow the time range).

Pages are keyset-paginated, newest first, on ``(ts, id)``: the cursor of a page is the position
of its last row, so page 1,000 costs what page 1 costs and rows written meanwhile never shift a
page (OFFSET would scan every skipped row and repeat or skip rows as new events arrive).

Encrypted fields (docs/encryption.md) are decrypted here, for the auditors and admins who may
read events, with the store's keyring. A value that cannot be decrypted (its key is missing,
or it does not authenticate) is shown as a marker starting with ``⚠ not decrypted`` and the
row's ``decryption_errors`` says why per field: never ciphertext, never a failed page. The
database cannot look inside an encrypted ``text_input``, so a text search is refused while
``text_input`` is configured for encryption.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol, Sequence

import sqlalchemy as sa

from voxtrail.event import FIELD_NAMES, FIELDS_BY_NAME
from voxtrail.keys import ENCRYPTABLE_FIELDS, Keyring, KeyringError
from voxtrail.query.filters import EARLIEST, LATEST, check_text
from voxtrail.store.schema import tts_events
from voxtrail.transforms.encrypt import PREFIX, DecryptionError, decrypt_value, is_encrypted, key_id_of

log = logging.getLogger("voxtrail.query")

#: Characters of ``text_input`` shown in the list (the detail page shows all of it).
EXCERPT_CHARS = 80
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
#: The list says "more than N" instead of counting a huge match exactly.
COUNT_CAP = 10_000
MAX_SEARCH_CHARS = 200

#: Columns of a list row, in display order.
LIST_COLUMNS = (
    "ts", "request_id", "user_id", "node", "model", "model_version", "emotion", "emotion_control",
    "status", "latency_ms", "text_length", "text_excerpt",
)

#: Filters attribute -> tts_events column: every tuple filter means "column IN (values)".
_FILTER_COLUMNS = {
    "node": "node",
    "model": "model",
    "model_version": "model_version",
    "emotion": "emotion",
    "emotion_control": "emotion_control",
    "status": "status",
}


class FiltersLike(Protocol):
    since: datetime | None
    until: datetime | None


class SearchUnavailable(ValueError):
    """A text search the database cannot answer: ``text_input`` is stored encrypted."""


#: Start of the value shown instead of a field that cannot be decrypted.
NOT_DECRYPTED = "⚠ not decrypted"


@dataclass(frozen=True)
class EventPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None  # pass as ``cursor`` for the next (older) page; None on the last page
    total: int  # matching events, at most COUNT_CAP + 1
    total_capped: bool  # True when more than COUNT_CAP events match

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": [jsonable(r) for r in self.rows],
            "next_cursor": self.next_cursor,
            "total": self.total,
            "total_capped": self.total_capped,
        }


def _naive_utc(value: datetime) -> datetime:
    """``ts`` is stored as naive UTC; filters carry aware datetimes."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def conditions(filters: FiltersLike | None, *, search: str | None = None, user: str | None = None,
               at_most: datetime | None = None) -> list:
    """WHERE clauses for the filters, a text search and a user.

    ``at_most`` (a page cursor's time) becomes the upper bound of ``ts`` when it is below the
    filters' ``until``: one range condition, so the index seek starts at the cursor (SQLite
    otherwise seeks from ``until`` and walks every newer row down to the cursor).
    """
    c = tts_events.c
    where: list = []
    until = _naive_utc(filters.until) if filters is not None and getattr(filters, "until", None) else None
    if at_most is not None and (until is None or at_most < until):
        where.append(c.ts <= at_most)
    elif until is not None:
        where.append(c.ts < until)
    if filters is not None:
        if getattr(filters, "since", None) is not None:
            where.append(c.ts >= _naive_utc(filters.since))
        for attr, column in _FILTER_COLUMNS.items():
            values = tuple(getattr(filters, attr, ()) or ())
            if values:
                where.append(c[column].in_(values))
    if search:
        # icontains: LOWER(x) LIKE LOWER('%…%') with % _ escaped, the same on all three dialects
        # (MySQL's binary collation would make a plain LIKE case-sensitive).
        where.append(c.text_input.icontains(search, autoescape=True))
    if user:
        where.append(c.user_id == user)
    return where


def validate_search(search: str | None) -> str | None:
    search = (search or "").strip()
    if len(search) > MAX_SEARCH_CHARS:
        raise ValueError(f"q: the search text is longer than {MAX_SEARCH_CHARS} characters")
    return check_text(search, "q", MAX_SEARCH_CHARS) or None


def validate_user(user: str | None) -> str | None:
    """``user``: an exact ``user_id`` (None when empty); ValueError when it cannot be one."""
    user = (user or "").strip()
    return check_text(user, "user", FIELDS_BY_NAME["user_id"].length) or None


def validate_request_id(request_id: str) -> str:
    """An id as a URL names it; ValueError when no stored event can have it."""
    return check_text(request_id, "request_id", FIELDS_BY_NAME["request_id"].length)


#: Ids are the database's BIGINT: anything larger is no position of a row.
MAX_ROW_ID = 2**63 - 1
_CURSOR_CHARS = 128
_INVALID_CURSOR = "cursor: invalid page cursor (use the next_cursor of a previous page)"


def encode_cursor(ts: datetime, row_id: int) -> str:
    raw = f"{ts.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (ts, id) position a cursor names; ValueError for anything encode_cursor cannot have
    made: a naive UTC time a view can show and a positive BIGINT id."""
    if len(cursor) > _CURSOR_CHARS:
        raise ValueError(_INVALID_CURSOR)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts_text, id_text = raw.split("|")
        ts = datetime.fromisoformat(ts_text)
        row_id = int(id_text) if id_text.isascii() and id_text.isdigit() else -1
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(_INVALID_CURSOR) from exc
    naive_range = EARLIEST.replace(tzinfo=None) <= ts <= LATEST.replace(tzinfo=None) if ts.tzinfo is None else False
    if not naive_range or not 0 < row_id <= MAX_ROW_ID:
        raise ValueError(_INVALID_CURSOR)
    return ts, row_id


def _list_select(where: Sequence) -> sa.Select:
    c = tts_events.c
    columns = [c.id, *(c[name] for name in LIST_COLUMNS if name != "text_excerpt")]
    # One more character than shown tells the view whether to add an ellipsis. An encrypted
    # text comes whole: a cut ciphertext cannot be decrypted.
    encrypted = sa.func.substr(c.text_input, 1, len(PREFIX)) == PREFIX
    excerpt = sa.case((encrypted, c.text_input),
                      else_=sa.func.substr(c.text_input, 1, EXCERPT_CHARS + 1)).label("text_excerpt")
    return sa.select(*columns, excerpt).where(*where)


def list_events(
    db: sa.Engine | Any,
    filters: FiltersLike | None,
    *,
    search: str | None = None,
    user: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> EventPage:
    """One page of matching events, newest first. ``db`` is the Store (its keyring decrypts) or
    an engine (the keys configured for this process decrypt)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    search, user = validate_search(search), validate_user(user)
    engine, protection = read_protection(db)
    refuse_encrypted_search(search, protection)
    where = conditions(filters, search=search, user=user)
    c = tts_events.c
    page_where = where
    if cursor:
        ts, row_id = decode_cursor(cursor)
        page_where = conditions(filters, search=search, user=user, at_most=ts)
        page_where.append(sa.or_(c.ts < ts, c.id < row_id))  # with ts <= cursor: strictly after it
    query = _list_select(page_where).order_by(c.ts.desc(), c.id.desc()).limit(limit + 1)
    counted = sa.select(sa.literal(1)).select_from(tts_events).where(*where).limit(COUNT_CAP + 1).subquery()
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
        has_more = len(rows) > limit
        # A first page that holds every match is its own count: no second scan (a text search
        # that finds little would otherwise read the whole range twice).
        if cursor is None and not has_more:
            total = len(rows)
        else:
            total = conn.execute(sa.select(sa.func.count()).select_from(counted)).scalar_one()
    rows = rows[:limit]
    for row in rows:
        protection.reveal(row, {"text_excerpt": "text_input"})
        excerpt = row["text_excerpt"]
        if excerpt is not None and len(excerpt) > EXCERPT_CHARS and not excerpt.startswith(NOT_DECRYPTED):
            row["text_excerpt"] = excerpt[:EXCERPT_CHARS] + "…"
    next_cursor = encode_cursor(rows[-1]["ts"], rows[-1]["id"]) if has_more else None
    for row in rows:
        del row["id"]
    return EventPage(rows, next_cursor, min(total, COUNT_CAP), total > COUNT_CAP)


def get_event(db: sa.Engine | Any, request_id: str) -> dict[str, Any] | None:
    """Every field of one event (plus ``ingested_at``), decrypted, or None when no event has that
    id. ``db`` as for :func:`list_events`."""
    engine, protection = read_protection(db)
    c = tts_events.c
    validate_request_id(request_id)
    query = sa.select(*(c[name] for name in FIELD_NAMES), c.ingested_at).where(c.request_id == request_id)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return protection.reveal(dict(row._mapping), {name: name for name in ENCRYPTABLE_FIELDS})


# --- decryption for readers ----------------------------------------------------------------------

class ReadProtection:
    """The keys and encrypted fields that apply to one read; keys are loaded only when a value
    actually is encrypted. Given a Store, its own; given an engine, this process's configuration
    (read anew each time: the keys may have been created or rotated since)."""

    def __init__(self, store: Any | None) -> None:
        self._store = store
        self._configured: tuple[Keyring | None, tuple[str, ...], str | None] | None = None

    def fields(self) -> tuple[str, ...]:
        if self._store is not None and hasattr(self._store, "encrypt_fields"):
            return tuple(self._store.encrypt_fields)
        return self._from_config()[1]

    def keyring(self) -> Keyring | None:
        if self._store is not None and hasattr(self._store, "keyring"):
            return self._store.keyring
        keyring, _, error = self._from_config()
        if error is not None:
            raise KeyringError(error)
        return keyring

    def _from_config(self) -> tuple[Keyring | None, tuple[str, ...], str | None]:
        if self._configured is None:
            self._configured = _configured()
        return self._configured

    def reveal(self, row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
        """Decrypt ``columns`` (row key -> field name) in place; failures become markers."""
        for key, name in columns.items():
            value = row.get(key)
            if not is_encrypted(value):
                continue
            try:
                row[key] = decrypt_value(value, self.keyring(), name, row["request_id"])
            except (KeyringError, DecryptionError) as exc:
                reason = _reason(exc, key_id_of(value))
                row[key] = f"{NOT_DECRYPTED}: {reason}"
                row.setdefault("decryption_errors", {})[key] = reason
                _log_once(str(exc))
        return row


def read_protection(db: Any) -> tuple[sa.Engine, ReadProtection]:
    """The engine and the read-side decryption for ``db`` (a Store, or an engine: then the keys
    configured for this process), shared by every query that returns event fields."""
    if isinstance(db, sa.Engine):
        return db, ReadProtection(None)
    return db.engine, ReadProtection(db)


def refuse_encrypted_search(search: str | None, protection: "ReadProtection") -> None:
    if search and "text_input" in protection.fields():
        raise SearchUnavailable(
            "text search is not possible: text_input is stored encrypted, so the database cannot look "
            "inside it; narrow by user, time, node or status instead (docs/encryption.md)"
        )


def _reason(exc: Exception, kid: str) -> str:
    """What a reader is told (the server's log has the whole message, with where keys were looked)."""
    if isinstance(exc, DecryptionError):
        return f"the value does not authenticate with key {kid!r}: the key is wrong or the value was altered"
    return f"key {kid!r} is not available to this server; an admin must restore it (voxtrail keys list)"


_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged and len(_logged) < 1000:
        _logged.add(message)
        log.warning("cannot decrypt a stored value: %s", message)


def _configured() -> tuple[Keyring | None, tuple[str, ...], str | None]:
    """Keys, encrypted fields and why keys could not be loaded, from ``config.load()``."""
    from voxtrail import config
    from voxtrail.keys import encrypted_fields

    try:
        settings = config.load()
        fields = encrypted_fields(settings)
    except config.ConfigError as exc:
        return None, (), str(exc)
    try:
        return Keyring.load(settings), fields, None
    except KeyringError as exc:
        return None, fields, str(exc)


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Timestamps as ISO-8601 UTC with ``Z``; everything else is already JSON-able."""
    out = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = _naive_utc(value).isoformat(timespec="microseconds") + "Z"
        out[key] = value
    return out
