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


def lock_events_table(url: str):
    """Another session holds a lock that stops every write to tts_events; returns its release()."""
    from voxtrail.store import Store

    store = Store.open(url)  # create the schema first
    conn = store.engine.connect()
    if store.dialect == "sqlite":
        conn = conn.execution_options(vx_immediate=True)
        conn.begin()  # BEGIN IMMEDIATE: the write lock
    elif store.dialect == "postgresql":
        conn.begin()
        conn.exec_driver_sql("LOCK TABLE tts_events IN ACCESS EXCLUSIVE MODE")
    else:
        conn.exec_driver_sql("LOCK TABLES tts_events WRITE")

    def release():
        if store.dialect == "mysql":
            conn.exec_driver_sql("UNLOCK TABLES")
        else:
            conn.rollback()
        conn.close()
        store.close()
    return release


def dead_port() -> int:
    """A local TCP port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 30.0) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` passes (False): no fixed sleeps in tests
    on a loaded machine."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())
