"""Shared pieces of the recorder tests: counting rows, a port with nothing listening."""

from __future__ import annotations

import socket

import sqlalchemy as sa

from voxtrail.store.engine import make_engine, normalize_url


def rows(url: str, sql: str = "SELECT COUNT(*) FROM tts_events"):
    u, dialect = normalize_url(url)
    engine = make_engine(u, dialect)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql))
            return result.scalar_one() if "COUNT(" in sql.upper() else result.all()
    finally:
        engine.dispose()


def request_ids(url: str) -> list[str]:
    return [r[0] for r in rows(url, "SELECT request_id FROM tts_events")]


def dead_port() -> int:
    """A local TCP port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
