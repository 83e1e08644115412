"""Import checkpoints and quarantined rejects: the small rows written next to each batch.

Both are written with the dialect's own upsert so that re-delivery (a crash after commit, two
importers on one file) converges on one row instead of failing on a unique key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from voxtrail.event import Reject
from voxtrail.store.schema import import_checkpoints, tts_rejects
from voxtrail.transforms.normalize import scrub

_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert, "mysql": mysql.insert}


@dataclass
class Checkpoint:
    """Where a file stream stopped; ``fp_*`` identify the file, ``tail_hash`` detects rewrites."""

    stream_id: str
    fp_len: int
    fp_hash: str
    path: str
    offset: int
    tail_hash: str
    format: str
    state: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def save_checkpoint(conn: sa.Connection, dialect: str, cp: Checkpoint) -> None:
    values = {
        "stream_id": cp.stream_id, "fp_len": cp.fp_len, "fp_hash": cp.fp_hash, "path": cp.path,
        "offset": cp.offset, "tail_hash": cp.tail_hash, "format": cp.format,
        "state": cp.state or {}, "updated_at": _utcnow(),
    }
    stmt = _INSERTS[dialect](import_checkpoints).values(**values)
    changes = {k: v for k, v in values.items() if k != "stream_id"}
    if dialect == "mysql":
        stmt = stmt.on_duplicate_key_update(**changes)
    else:
        stmt = stmt.on_conflict_do_update(index_elements=["stream_id"], set_=changes)
    conn.execute(stmt)


def load_checkpoints(conn: sa.Connection) -> list[Checkpoint]:
    rows = conn.execute(sa.select(import_checkpoints).order_by(import_checkpoints.c.stream_id))
    out = []
    for r in rows.mappings():
        d = dict(r)
        d["state"] = d["state"] or {}
        out.append(Checkpoint(**d))
    return out


def excerpt_text(excerpt: bytes) -> str:
    # backslashreplace keeps undecodable bytes recoverable; NUL is escaped the same way because
    # PostgreSQL text cannot store it.
    return excerpt.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def reason_text(reason: str) -> str:
    """A reject's reason as every database stores it: it may quote the refused value."""
    return scrub(reason).replace("\x00", "\\x00")


def save_rejects(
    conn: sa.Connection, dialect: str, rejects: Sequence[Reject], stream_id: str, source_file: str | None
) -> None:
    if not rejects:
        return
    now = _utcnow()
    rows = [
        {"stream_id": stream_id, "source_file": source_file, "source_offset": r.offset,
         "reason": reason_text(r.reason), "excerpt": excerpt_text(r.excerpt), "created_at": now}
        for r in rejects
    ]
    stmt = _INSERTS[dialect](tts_rejects)
    if dialect == "mysql":
        stmt = stmt.on_duplicate_key_update(id=tts_rejects.c.id)  # no-op: keep the first
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["stream_id", "source_offset"])
    conn.execute(stmt, rows)
