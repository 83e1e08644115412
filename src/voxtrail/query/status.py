"""What is in the store, and how far each log file has been read."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa

from voxtrail.store.schema import import_checkpoints, tts_events, tts_rejects


@dataclass
class StreamStatus:
    stream_id: str
    path: str
    format: str
    offset: int
    size: int | None  # the file's current size, None when it is gone (or compressed)
    updated_at: datetime | None

    @property
    def behind(self) -> int | None:
        """Bytes written to the file but not yet imported."""
        return None if self.size is None else max(0, self.size - self.offset)


@dataclass
class StoreStatus:
    events: int
    failed: int
    first_ts: datetime | None
    last_ts: datetime | None
    rejects: int
    streams: list[StreamStatus]

    def as_dict(self) -> dict:
        out = asdict(self)
        for stream, data in zip(self.streams, out["streams"]):
            data["behind"] = stream.behind
        return out


def store_status(engine: sa.Engine) -> StoreStatus:
    failed = sa.func.sum(sa.case((tts_events.c.status == "failed", 1), else_=0))
    with engine.connect() as conn:
        events, n_failed, first, last = conn.execute(
            sa.select(sa.func.count(), failed, sa.func.min(tts_events.c.ts), sa.func.max(tts_events.c.ts))
        ).one()
        rejects = conn.execute(sa.select(sa.func.count()).select_from(tts_rejects)).scalar_one()
        rows = conn.execute(
            sa.select(import_checkpoints.c.stream_id, import_checkpoints.c.path, import_checkpoints.c.format,
                      import_checkpoints.c.offset, import_checkpoints.c.updated_at)
            .order_by(import_checkpoints.c.updated_at.desc())
        ).all()
    streams = [StreamStatus(r.stream_id, r.path, r.format, r.offset, _plain_size(r.path), r.updated_at) for r in rows]
    return StoreStatus(events, int(n_failed or 0), first, last, rejects, streams)


def _plain_size(path: str) -> int | None:
    try:
        if path.endswith(".gz"):
            return None
        return os.path.getsize(path)
    except OSError:
        return None
