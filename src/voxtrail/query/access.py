"""Reading the access log (for the admin page and ``voxtrail access-log``): entries newest first,
filtered by time, actor and action, keyset-paginated on ``id``.

``id`` is the log's write order (the hash chain follows it), so a page's cursor is the id of its
last entry and entries appended meanwhile never shift a page. Writing entries and verifying the
chain live in :mod:`voxtrail.store.access_log`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from voxtrail.query.filters import check_text, parse_time, parse_zone, shown
from voxtrail.store.access_log import ACTIONS
from voxtrail.store.schema import access_log

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: A cursor is an entry's id: a BIGINT, so at most 19 digits.
_CURSOR = re.compile(r"[0-9]{1,19}", re.ASCII)
_MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class AccessEntry:
    id: int
    at: datetime  # naive UTC
    actor: str
    role: str | None
    channel: str
    action: str
    target: str | None
    query: dict[str, Any] | None
    row_count: int
    client: str | None
    entry_hash: str

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["at"] = self.at.isoformat(timespec="microseconds") + "Z"
        return out

    def query_text(self) -> str:
        """The question in one line: ``key=value`` pairs, as a person reads them."""
        if not self.query:
            return ""
        return " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                        for k, v in self.query.items() if v not in (None, "", [], {}))


@dataclass(frozen=True)
class AccessPage:
    entries: list[AccessEntry]
    next_cursor: str | None  # pass as ``cursor`` for the next (older) page

    def as_dict(self) -> dict[str, Any]:
        return {"entries": [e.as_dict() for e in self.entries], "next_cursor": self.next_cursor}


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def parse_when(text: str | None, name: str) -> datetime | None:
    """A time the reader typed: ISO (UTC unless it has an offset) or a duration back from now
    (``7d``, ``36h``); empty or ``all``: no bound. ValueError names ``name``."""
    text = (text or "").strip()
    if not text or text == "all":
        return None
    return parse_time(text, now=datetime.now(timezone.utc), tz=parse_zone("UTC"), name=name)


def list_access(engine: sa.Engine, *, since: datetime | None = None, until: datetime | None = None,
                actor: str | None = None, action: str | None = None, cursor: str | None = None,
                limit: int = DEFAULT_PAGE_SIZE) -> AccessPage:
    """One page of entries, newest first; ``since`` inclusive, ``until`` exclusive.

    ValueError (a message for the user, naming the parameter) for an unknown action, an actor
    no entry can have, a bad cursor or limit.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    if action is not None and action not in ACTIONS:
        raise ValueError(f"action: unknown action {shown(action)}: one of {', '.join(ACTIONS)}")
    if actor:
        check_text(actor, "actor", access_log.c.actor.type.length)
    c = access_log.c
    where = []
    if since is not None:
        where.append(c.at >= _naive_utc(since))
    if until is not None:
        where.append(c.at < _naive_utc(until))
    if actor:
        where.append(c.actor == actor)
    if action:
        where.append(c.action == action)
    if cursor:
        if not _CURSOR.fullmatch(cursor) or int(cursor) > _MAX_ID:
            raise ValueError("cursor: invalid page cursor (use the next_cursor of a previous page)")
        where.append(c.id < int(cursor))
    query = (sa.select(*(col for col in access_log.c if col.name != "prev_hash"))
             .where(*where).order_by(c.id.desc()).limit(limit + 1))
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    has_more = len(rows) > limit
    entries = [_entry(row) for row in rows[:limit]]
    return AccessPage(entries, str(entries[-1].id) if has_more else None)


def _entry(row: dict[str, Any]) -> AccessEntry:
    row["query"] = json.loads(row["query"]) if row["query"] else None
    return AccessEntry(**row)
